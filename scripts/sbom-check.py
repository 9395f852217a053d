#!/usr/bin/env python3
"""SBOM helper of scripts/sbom.sh (standard library only).

  sbom-check.py --deb DPKG_DIR IMAGE IMAGE_ID VERSION CODENAME
      prints a CycloneDX 1.5 JSON SBOM of the Debian packages recorded in DPKG_DIR (an image's
      /var/lib/dpkg: its `status` file, or the `status.d/` entries of an image without dpkg)
  sbom-check.py [--binaries-only] DIR
      checks the SBOMs in DIR: CycloneDX 1.5 JSON, every component named, versioned and with a
      purl, and the components each artifact must list (and must not) present
"""
import datetime
import json
import os
import sys
import urllib.parse
import uuid


def stanzas(text):
    fields, key = {}, None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t" and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    if fields:
        yield fields


def installed(dpkg_dir):
    texts = []
    status = os.path.join(dpkg_dir, "status")
    if os.path.isfile(status):
        texts.append(open(status, encoding="utf-8", errors="replace").read())
    status_d = os.path.join(dpkg_dir, "status.d")
    if os.path.isdir(status_d):
        for name in sorted(os.listdir(status_d)):
            with open(os.path.join(status_d, name), encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
    packages = {}
    for text in texts:
        for s in stanzas(text):
            if s.get("Status", "install ok installed").endswith(" installed") and "Package" in s:
                packages[(s["Package"], s.get("Architecture", ""))] = s
    return [packages[k] for k in sorted(packages)]


def deb_sbom(dpkg_dir, image, image_id, version, codename):
    components = []
    for p in installed(dpkg_dir):
        name, ver, arch = p["Package"], p.get("Version", ""), p.get("Architecture", "")
        purl = "pkg:deb/debian/{}@{}?arch={}&distro={}".format(
            urllib.parse.quote(name, safe=""), urllib.parse.quote(ver, safe=""), arch, codename
        )
        component = {"type": "library", "bom-ref": purl, "name": name, "version": ver, "purl": purl}
        source = p.get("Source")
        if source:
            component["properties"] = [{"name": "debian:source", "value": source}]
        components.append(component)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:" + str(uuid.uuid4()),
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": [{"vendor": "DataGuardian", "name": "scripts/sbom.sh", "version": version}],
            "component": {
                "type": "container",
                "bom-ref": image,
                "name": image.rsplit(":", 1)[0],
                "version": version,
                "hashes": [{"alg": "SHA-256", "content": image_id.split(":", 1)[-1]}],
            },
        },
        "components": components,
    }


# What each SBOM must list, and what it must not (dev-dependencies and test tools are not
# shipped; the operator image carries no database client).
EXPECT = {
    "dataguardian.cdx.json": (
        ["tokio", "kube-client", "aws-sdk-s3", "age", "rustls", "tokio-postgres", "mysql_async", "zstd"],
        ["proptest", "jsonschema", "kube-sim", "testkit"],
    ),
    "kubectl-dataguardian.cdx.json": (["clap", "serde_json"], ["proptest", "kube-sim"]),
    "image-dataguardian.cdx.json": (
        ["libc6", "ca-certificates", "postgresql-client-15", "mariadb-client"],
        [],
    ),
    "image-dataguardian-operator.cdx.json": (
        ["libc6", "ca-certificates"],
        ["postgresql-client-15", "mariadb-client", "dpkg", "bash"],
    ),
}


def check(directory, binaries_only):
    problems = []
    checked = failed = 0
    for file, (must, must_not) in EXPECT.items():
        if binaries_only and file.startswith("image-"):
            continue
        checked += 1
        before = len(problems)
        path = os.path.join(directory, file)
        try:
            with open(path, encoding="utf-8") as f:
                bom = json.load(f)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: {e}")
            failed += 1
            continue
        if bom.get("bomFormat") != "CycloneDX" or bom.get("specVersion") != "1.5":
            problems.append(f"{path}: not a CycloneDX 1.5 document")
        components = bom.get("components") or []
        names = {c.get("name") for c in components}
        for c in components:
            if not c.get("name") or not c.get("version") or not c.get("purl"):
                problems.append(f"{path}: component without name, version or purl: {c}")
        problems += [f"{path}: {n} is not listed" for n in must if n not in names]
        problems += [f"{path}: {n} is listed but is not shipped" for n in must_not if n in names]
        failed += len(problems) > before
        print(f"sbom: {path}: {len(components)} components")
    for p in problems:
        print("sbom: " + p, file=sys.stderr)
    print(f"sbom: {checked - failed} passed, {failed} failed")
    return 1 if problems else 0


def main(argv):
    if len(argv) == 7 and argv[1] == "--deb":
        json.dump(deb_sbom(*argv[2:7]), sys.stdout, indent=2)
        print()
        return 0
    if len(argv) == 3 and argv[1] == "--binaries-only":
        return check(argv[2], True)
    if len(argv) == 2:
        return check(argv[1], False)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
