package main

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/Masterminds/semver"
	"sigs.k8s.io/yaml"
)

// Metadata is Chart.yaml, with the fields and JSON names of Helm's chart.Metadata (templates
// see it as .Chart: .Chart.Name, .Chart.Version, .Chart.AppVersion, ...).
type Metadata struct {
	Name         string            `json:"name,omitempty"`
	Home         string            `json:"home,omitempty"`
	Sources      []string          `json:"sources,omitempty"`
	Version      string            `json:"version,omitempty"`
	Description  string            `json:"description,omitempty"`
	Keywords     []string          `json:"keywords,omitempty"`
	Maintainers  []*Maintainer     `json:"maintainers,omitempty"`
	Icon         string            `json:"icon,omitempty"`
	APIVersion   string            `json:"apiVersion,omitempty"`
	Condition    string            `json:"condition,omitempty"`
	Tags         string            `json:"tags,omitempty"`
	AppVersion   string            `json:"appVersion,omitempty"`
	Deprecated   bool              `json:"deprecated,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	KubeVersion  string            `json:"kubeVersion,omitempty"`
	Dependencies []interface{}     `json:"dependencies,omitempty"`
	Type         string            `json:"type,omitempty"`
}

// Maintainer is one entry of Chart.yaml's maintainers.
type Maintainer struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	URL   string `json:"url,omitempty"`
}

// Chart is a loaded chart directory, split the way Helm's loader splits it.
type Chart struct {
	Metadata *Metadata
	// Values is values.yaml (numbers are float64, as with Helm's sigs.k8s.io/yaml reader).
	Values map[string]interface{}
	// Schema is values.schema.json, nil when absent.
	Schema []byte
	// Templates maps "templates/..." paths to their text.
	Templates map[string]string
	// Files is every other file (what .Files sees).
	Files Files
}

// loadChart reads a chart directory. Files matched by .helmignore are left out; Chart.yaml,
// values.yaml, values.schema.json, templates/ and charts/ are not in .Files (as in Helm).
func loadChart(dir string) (*Chart, error) {
	ignore, err := loadHelmignore(filepath.Join(dir, ".helmignore"))
	if err != nil {
		return nil, err
	}
	c := &Chart{Templates: map[string]string{}, Files: Files{}, Values: map[string]interface{}{}}
	var chartYAML, valuesYAML []byte
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if ignore.ignored(rel, d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if rel == "charts" {
				entries, _ := os.ReadDir(p)
				if len(entries) > 0 {
					return fmt.Errorf("%s: subcharts (charts/) are not supported by this renderer", dir)
				}
			}
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch {
		case rel == "Chart.yaml":
			chartYAML = data
		case rel == "values.yaml":
			valuesYAML = data
		case rel == "values.schema.json":
			c.Schema = data
		case rel == "Chart.lock", rel == "requirements.yaml", rel == "requirements.lock":
			return fmt.Errorf("%s: chart dependencies are not supported by this renderer", rel)
		case strings.HasPrefix(rel, "templates/"):
			c.Templates[rel] = string(data)
		case strings.HasPrefix(rel, "crds/"):
			return fmt.Errorf("%s: the chart crds/ directory is not supported by this renderer (ship CRDs as templates)", rel)
		default:
			c.Files[rel] = data
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if chartYAML == nil {
		return nil, fmt.Errorf("Chart.yaml file is missing in %s", dir)
	}
	c.Metadata = &Metadata{}
	if err := yaml.Unmarshal(chartYAML, c.Metadata); err != nil {
		return nil, fmt.Errorf("cannot load Chart.yaml: %w", err)
	}
	if err := validateMetadata(c.Metadata); err != nil {
		return nil, fmt.Errorf("validation: chart.metadata.%w", err)
	}
	if valuesYAML != nil {
		if c.Values, err = readValues(valuesYAML); err != nil {
			return nil, fmt.Errorf("cannot load values.yaml: %w", err)
		}
	}
	return c, nil
}

// validateMetadata applies the checks of Helm's Metadata.Validate that matter for rendering.
func validateMetadata(m *Metadata) error {
	if m.APIVersion == "" {
		return fmt.Errorf("apiVersion is required")
	}
	if m.APIVersion != "v2" {
		return fmt.Errorf("apiVersion %q is not supported by this renderer (only v2)", m.APIVersion)
	}
	if m.Name == "" {
		return fmt.Errorf("name is required")
	}
	if m.Name != path.Base(m.Name) {
		return fmt.Errorf("name %q is invalid", m.Name)
	}
	if m.Version == "" {
		return fmt.Errorf("version is required")
	}
	if _, err := semver.StrictNewVersion(m.Version); err != nil {
		return fmt.Errorf("version %q is invalid", m.Version)
	}
	if m.Type != "" && m.Type != "application" {
		return fmt.Errorf("type %q is not supported by this renderer (only application)", m.Type)
	}
	if len(m.Dependencies) > 0 {
		return fmt.Errorf("dependencies are not supported by this renderer")
	}
	return nil
}

// helmignore holds the rules of a .helmignore file (Helm's pkg/ignore, without "**").
type helmignore struct {
	rules []ignoreRule
}

type ignoreRule struct {
	pattern string
	negate  bool
	dirOnly bool
}

func loadHelmignore(file string) (*helmignore, error) {
	h := &helmignore{}
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return h, nil
	}
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(line, "**") {
			return nil, fmt.Errorf(".helmignore: double-star (**) syntax is not supported: %q", line)
		}
		r := ignoreRule{}
		if strings.HasPrefix(line, "!") {
			r.negate, line = true, line[1:]
		}
		if strings.HasSuffix(line, "/") {
			r.dirOnly, line = true, strings.TrimSuffix(line, "/")
		}
		if _, err := path.Match(line, "x"); err != nil {
			return nil, fmt.Errorf(".helmignore: bad pattern %q: %w", line, err)
		}
		r.pattern = line
		h.rules = append(h.rules, r)
	}
	return h, nil
}

// ignored follows Helm: the last matching rule decides; a pattern without a slash matches the
// base name, one with a slash the path from the chart root.
func (h *helmignore) ignored(rel string, isDir bool) bool {
	// Helm always ignores its own ignore file.
	if rel == ".helmignore" {
		return true
	}
	ignored := false
	for _, r := range h.rules {
		if r.dirOnly && !isDir {
			continue
		}
		target := path.Base(rel)
		pattern := r.pattern
		if strings.Contains(pattern, "/") {
			target, pattern = rel, strings.TrimPrefix(pattern, "/")
		}
		if ok, _ := path.Match(pattern, target); ok {
			ignored = !r.negate
		}
	}
	return ignored
}

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
