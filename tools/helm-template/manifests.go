package main

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// installOrder is Helm's releaseutil.InstallOrder: kinds are installed (and printed) in this
// order; unknown kinds come last, alphabetically; equal kinds keep their file order.
var installOrder = []string{
	"PriorityClass",
	"Namespace",
	"NetworkPolicy",
	"ResourceQuota",
	"LimitRange",
	"PodSecurityPolicy",
	"PodDisruptionBudget",
	"ServiceAccount",
	"Secret",
	"SecretList",
	"ConfigMap",
	"StorageClass",
	"PersistentVolume",
	"PersistentVolumeClaim",
	"CustomResourceDefinition",
	"ClusterRole",
	"ClusterRoleList",
	"ClusterRoleBinding",
	"ClusterRoleBindingList",
	"Role",
	"RoleList",
	"RoleBinding",
	"RoleBindingList",
	"Service",
	"DaemonSet",
	"Pod",
	"ReplicationController",
	"ReplicaSet",
	"Deployment",
	"HorizontalPodAutoscaler",
	"StatefulSet",
	"Job",
	"CronJob",
	"IngressClass",
	"Ingress",
	"APIService",
	"MutatingWebhookConfiguration",
	"ValidatingWebhookConfiguration",
}

// Manifest is one YAML document of a rendered template.
type Manifest struct {
	Name    string
	Content string
	Kind    string
}

// simpleHead is what Helm reads from each document (releaseutil.SimpleHead).
type simpleHead struct {
	Version  string `json:"apiVersion"`
	Kind     string `json:"kind,omitempty"`
	Metadata *struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata,omitempty"`
}

var sep = regexp.MustCompile("(?:^|\\s*\n)---\\s*")

// splitManifests is Helm's releaseutil.SplitManifests, in document order.
func splitManifests(bigFile string) []string {
	var res []string
	for _, d := range sep.Split(strings.TrimSpace(bigFile), -1) {
		if d == "" {
			continue
		}
		res = append(res, strings.TrimSpace(d))
	}
	return res
}

// sortManifests splits the rendered files (in path order) into documents, reads each one's head
// (a YAML error fails, as in Helm) and sorts them by kind in install order.
func sortManifests(files map[string]string) ([]Manifest, error) {
	var result []Manifest
	for _, filePath := range sortedKeys(files) {
		content := files[filePath]
		if strings.TrimSpace(content) == "" {
			continue
		}
		for _, m := range splitManifests(content) {
			var head simpleHead
			if err := yaml.Unmarshal([]byte(m), &head); err != nil {
				return nil, fmt.Errorf("YAML parse error on %s: %w", filePath, err)
			}
			if head.Metadata != nil {
				if _, hook := head.Metadata.Annotations["helm.sh/hook"]; hook {
					return nil, fmt.Errorf("%s: hooks (helm.sh/hook) are not supported by this renderer", filePath)
				}
			}
			result = append(result, Manifest{Name: filePath, Content: m, Kind: head.Kind})
		}
	}
	ordering := make(map[string]int, len(installOrder))
	for i, k := range installOrder {
		ordering[k] = i
	}
	sort.SliceStable(result, func(i, j int) bool {
		kindA, kindB := result[i].Kind, result[j].Kind
		first, aok := ordering[kindA]
		second, bok := ordering[kindB]
		if !aok && !bok {
			if kindA != kindB {
				return kindA < kindB
			}
			return first < second
		}
		if !aok {
			return false
		}
		if !bok {
			return true
		}
		return first < second
	})
	return result, nil
}
