package main

import (
	"fmt"
	"sort"

	"github.com/Masterminds/semver"
)

// defaultKubeVersion is what .Capabilities.KubeVersion says without --kube-version (Helm takes
// it from the client-go it was built with; the kubectl installed here is 1.32).
const defaultKubeVersion = "v1.32.0"

// KubeVersion is .Capabilities.KubeVersion (Helm's chartutil.KubeVersion).
type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

// String is the version, e.g. "v1.32.0".
func (kv *KubeVersion) String() string { return kv.Version }

// GitVersion is the deprecated alias of Version, kept by Helm for old charts.
func (kv *KubeVersion) GitVersion() string { return kv.Version }

// VersionSet is .Capabilities.APIVersions.
type VersionSet []string

// Has says whether "group/version" or "group/version/Kind" is in the set.
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// Capabilities is .Capabilities.
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion map[string]string
}

// builtinAPIVersions are the group/versions of Kubernetes 1.29–1.32 that Helm's client-go
// scheme knows (Helm also lists "group/version/Kind" entries, which this set leaves out).
var builtinAPIVersions = []string{
	"v1",
	"admissionregistration.k8s.io/v1",
	"apiextensions.k8s.io/v1",
	"apiregistration.k8s.io/v1",
	"apps/v1",
	"authentication.k8s.io/v1",
	"authorization.k8s.io/v1",
	"autoscaling/v1",
	"autoscaling/v2",
	"batch/v1",
	"certificates.k8s.io/v1",
	"coordination.k8s.io/v1",
	"discovery.k8s.io/v1",
	"events.k8s.io/v1",
	"flowcontrol.apiserver.k8s.io/v1",
	"networking.k8s.io/v1",
	"node.k8s.io/v1",
	"policy/v1",
	"rbac.authorization.k8s.io/v1",
	"scheduling.k8s.io/v1",
	"storage.k8s.io/v1",
}

func newCapabilities(kubeVersion string, extra []string) (*Capabilities, error) {
	v, err := semver.NewVersion(kubeVersion)
	if err != nil {
		return nil, fmt.Errorf("invalid kube version %q: %w", kubeVersion, err)
	}
	apis := append(VersionSet{}, builtinAPIVersions...)
	for _, a := range extra {
		if a != "" && !apis.Has(a) {
			apis = append(apis, a)
		}
	}
	sort.Strings(apis)
	return &Capabilities{
		KubeVersion: KubeVersion{
			Version: "v" + v.String(),
			Major:   fmt.Sprint(v.Major()),
			Minor:   fmt.Sprint(v.Minor()),
		},
		APIVersions: apis,
		HelmVersion: map[string]string{"version": "v3.17.0-helm-template-go"},
	}, nil
}

// checkKubeVersion refuses a cluster version outside the chart's kubeVersion range, with Helm's
// message.
func checkKubeVersion(m *Metadata, caps *Capabilities) error {
	if m.KubeVersion == "" {
		return nil
	}
	c, err := semver.NewConstraint(m.KubeVersion)
	if err != nil {
		return fmt.Errorf("invalid kubeVersion %q in Chart.yaml: %w", m.KubeVersion, err)
	}
	v, err := semver.NewVersion(caps.KubeVersion.Version)
	if err != nil {
		return err
	}
	if !c.Check(v) {
		return fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", m.KubeVersion, caps.KubeVersion.Version)
	}
	return nil
}
