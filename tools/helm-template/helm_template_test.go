package main

import (
	"strings"
	"testing"
)

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	o, err := parseArgs(args)
	if err != nil {
		t.Fatalf("parseArgs: %v", err)
	}
	out, err := run(o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return out
}

func runErr(t *testing.T, args ...string) string {
	t.Helper()
	o, err := parseArgs(args)
	if err != nil {
		return err.Error()
	}
	if _, err = run(o); err == nil {
		t.Fatalf("expected an error for %v", args)
	}
	return err.Error()
}

// The output format, document split and install-order sort of `helm template`.
func TestOutputIsSortedByKindWithSourceComments(t *testing.T) {
	out := mustRun(t, "rel", "testdata/mini", "-n", "ns1")
	var sources, kinds []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "# Source: ") {
			sources = append(sources, strings.TrimPrefix(line, "# Source: "))
		}
		if strings.HasPrefix(line, "kind: ") {
			kinds = append(kinds, strings.TrimPrefix(line, "kind: "))
		}
	}
	wantKinds := []string{"Namespace", "ConfigMap", "Deployment", "Widget"}
	if strings.Join(kinds, ",") != strings.Join(wantKinds, ",") {
		t.Fatalf("kinds %v, want %v\n%s", kinds, wantKinds, out)
	}
	wantSources := []string{"mini/templates/cm.yaml", "mini/templates/cm.yaml", "mini/templates/deploy.yaml", "mini/templates/cm.yaml"}
	if strings.Join(sources, ",") != strings.Join(wantSources, ",") {
		t.Fatalf("sources %v, want %v", sources, wantSources)
	}
	if !strings.HasPrefix(out, "---\n# Source: mini/templates/cm.yaml\napiVersion: v1\nkind: Namespace\n") {
		t.Fatalf("output starts with:\n%s", out[:120])
	}
	if strings.Contains(out, "Installed rel") || strings.Contains(out, "kind: Secret") {
		t.Fatalf("NOTES.txt and empty templates are not printed:\n%s", out)
	}
}

func TestBuiltInsAndFunctions(t *testing.T) {
	out := mustRun(t, "rel", "testdata/mini", "-n", "ns1", "--api-versions", "monitoring.coreos.com/v1")
	for _, want := range []string{
		"  name: rel-mini\n  namespace: ns1\n",
		"  replicas: 2\n",
		// values.yaml numbers are float64, as in Helm: %v prints big ones in exponent form.
		"  big: 1e+06\n",
		// missingkey=zero and Helm's "<no value>" removal.
		"  missing: \n",
		"  tpl: demo-4.5\n",
		"  kube: v1.32.0 32\n",
		"  hasMonitoring: true\n",
		"  install: true false Helm\n",
		"  template: mini/templates/deploy.yaml\n",
		"  nested:\n    drop: dropped\n    keep: kept\n    list:\n    - a\n    - b\n",
		"  json: [\"a\",\"b\"]\n",
		"  lookup: 0\n",
		"  one.conf: |\n    x=1\n  two.conf: |\n    y=2\n",
		"  raw: \"a: 1\"\n",
		"  lines: \"1\"\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "skip.bak") {
		t.Errorf(".helmignore'd files are not in .Files:\n%s", out)
	}
}

func TestValuesFilesSetAndNullsCoalesceLikeHelm(t *testing.T) {
	out := mustRun(t, "rel", "testdata/mini",
		"--set", "nested.drop=null,nested.list={x,y},replicas=5",
		"--set-string", "name=007",
		"--is-upgrade", "--kube-version", "1.29.3")
	for _, want := range []string{
		"  replicas: 5\n",
		"  nested:\n    keep: kept\n    list:\n    - x\n    - \"y\"\n",
		"  tpl: 007-4.5\n",
		"  kube: v1.29.3 29\n",
		"  hasMonitoring: false\n",
		"  install: false true Helm\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestSetParsing(t *testing.T) {
	base := map[string]interface{}{}
	if err := parseInto(`a.b=1,c=true,d=0,e=007,f=null,g\.h=x\,y,i[1]=z,j={1,two}`, base, false); err != nil {
		t.Fatal(err)
	}
	got := toJSON(base)
	want := `{"a":{"b":1},"c":true,"d":0,"e":"007","f":null,"g.h":"x,y","i":[null,"z"],"j":[1,"two"]}`
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	if err := parseInto("novalue", map[string]interface{}{}, false); err == nil || !strings.Contains(err.Error(), `key "novalue" has no value`) {
		t.Fatalf("err %v", err)
	}
}

func TestRequiredAndFailReportTheLocationLikeHelm(t *testing.T) {
	msg := runErr(t, "rel", "testdata/mini", "--set", "extra.x=1")
	if !strings.HasPrefix(msg, "execution error at (mini/templates/req.yaml:5:") || !strings.HasSuffix(msg, "): extra.name is required") {
		t.Fatalf("got %q", msg)
	}
	msg = runErr(t, "rel", "testdata/mini", "--set", "extra.name=n,extra.boom=true")
	if !strings.HasPrefix(msg, "execution error at (mini/templates/req.yaml:7:") || !strings.HasSuffix(msg, "): extra.boom: no") {
		t.Fatalf("got %q", msg)
	}
	out := mustRun(t, "rel", "testdata/mini", "--set", "extra.name=n")
	if !strings.Contains(out, "# Source: mini/templates/req.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n\n") {
		t.Fatalf("got\n%s", out)
	}
}

func TestSchemaErrorsAreHelms(t *testing.T) {
	msg := runErr(t, "rel", "testdata/mini", "--set", "replicas=-1,bogus=1")
	want := "values don't meet the specifications of the schema(s) in the following chart(s):\nmini:\n"
	if !strings.HasPrefix(msg, want) {
		t.Fatalf("got %q", msg)
	}
	for _, line := range []string{"- replicas: Must be greater than or equal to 0\n", "- (root): Additional property bogus is not allowed\n"} {
		if !strings.Contains(msg, line) {
			t.Errorf("missing %q in %q", line, msg)
		}
	}
}

func TestKubeVersionConstraint(t *testing.T) {
	msg := runErr(t, "rel", "testdata/mini", "--kube-version", "v1.28.9")
	if msg != "chart requires kubeVersion: >=1.29.0-0 which is incompatible with Kubernetes v1.28.9" {
		t.Fatalf("got %q", msg)
	}
}

func TestNotes(t *testing.T) {
	out := mustRun(t, "rel", "testdata/mini", "--notes")
	if out != "Installed rel.\n" {
		t.Fatalf("got %q", out)
	}
}

// Helm parses deeper templates first and, at equal depth, in reverse lexical order: the define
// parsed last wins.
func TestTemplateParseOrder(t *testing.T) {
	got := sortTemplates([]string{"c/templates/b.yaml", "c/templates/sub/x.tpl", "c/templates/a.yaml", "c/templates/_h.tpl"})
	want := "c/templates/sub/x.tpl,c/templates/b.yaml,c/templates/a.yaml,c/templates/_h.tpl"
	if strings.Join(got, ",") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}
