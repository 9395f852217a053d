package main

import (
	"encoding/base64"
	"path"
	"strings"

	"github.com/gobwas/glob"
)

// Files is what templates see as .Files: the chart's non-template files by path, with the
// methods of Helm's engine.files.
type Files map[string][]byte

// GetBytes returns a file's content, nil when there is no such file.
func (f Files) GetBytes(name string) []byte {
	return f[name]
}

// Get returns a file's content as a string, "" when there is no such file.
func (f Files) Get(name string) string {
	return string(f.GetBytes(name))
}

// Glob returns the files whose path matches pattern (gobwas/glob with '/' as separator, as Helm).
func (f Files) Glob(pattern string) Files {
	g, err := glob.Compile(pattern, '/')
	if err != nil {
		g, _ = glob.Compile("**")
	}
	nf := Files{}
	for name, contents := range f {
		if g.Match(name) {
			nf[name] = contents
		}
	}
	return nf
}

// AsConfig renders the files as the data of a ConfigMap: base name → content, as YAML.
func (f Files) AsConfig() string {
	if f == nil {
		return ""
	}
	m := make(map[string]string)
	for k, v := range f {
		m[path.Base(k)] = string(v)
	}
	return toYAML(m)
}

// AsSecrets renders the files as the data of a Secret: base name → base64 content, as YAML.
func (f Files) AsSecrets() string {
	if f == nil {
		return ""
	}
	m := make(map[string]string)
	for k, v := range f {
		m[path.Base(k)] = base64.StdEncoding.EncodeToString(v)
	}
	return toYAML(m)
}

// Lines returns a file's lines ("\n"-separated; a trailing newline adds no empty line).
func (f Files) Lines(name string) []string {
	if f == nil || f[name] == nil {
		return []string{}
	}
	s := string(f[name])
	if s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return strings.Split(s, "\n")
}
