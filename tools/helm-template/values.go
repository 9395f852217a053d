package main

import (
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"

	"github.com/mitchellh/copystructure"
	"sigs.k8s.io/yaml"
)

// readValues parses a values document like Helm's chartutil.ReadValues: YAML → JSON →
// map[string]interface{}, so numbers are float64 (e.g. 1000000 prints as 1e+06 with %v).
func readValues(data []byte) (map[string]interface{}, error) {
	vals := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &vals); err != nil {
		return nil, err
	}
	if vals == nil {
		vals = map[string]interface{}{}
	}
	return vals, nil
}

// mergeUserValues merges -f files, then --set, then --set-string, like Helm's
// values.Options.MergeValues.
func mergeUserValues(files, sets, setStrings []string) (map[string]interface{}, error) {
	base := map[string]interface{}{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		current, err := readValues(data)
		if err != nil {
			return nil, fmt.Errorf("failed to parse %s: %w", file, err)
		}
		base = mergeMaps(base, current)
	}
	for _, s := range sets {
		if err := parseInto(s, base, false); err != nil {
			return nil, fmt.Errorf("failed parsing --set data: %w", err)
		}
	}
	for _, s := range setStrings {
		if err := parseInto(s, base, true); err != nil {
			return nil, fmt.Errorf("failed parsing --set-string data: %w", err)
		}
	}
	return base, nil
}

func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if v, ok := v.(map[string]interface{}); ok {
			if bv, ok := out[k]; ok {
				if bv, ok := bv.(map[string]interface{}); ok {
					out[k] = mergeMaps(bv, v)
					continue
				}
			}
		}
		out[k] = v
	}
	return out
}

func istable(v interface{}) bool {
	_, ok := v.(map[string]interface{})
	return ok
}

// coalesceValues returns the chart's defaults overlaid with the user's values (Helm's
// chartutil.CoalesceValues): user values win, tables merge key by key, and a user null deletes
// the default.
func coalesceValues(c *Chart, user map[string]interface{}) (map[string]interface{}, error) {
	vcopy, err := copystructure.Copy(user)
	if err != nil {
		return nil, err
	}
	v := vcopy.(map[string]interface{})
	dcopy, err := copystructure.Copy(c.Values)
	if err != nil {
		return nil, err
	}
	for key, val := range dcopy.(map[string]interface{}) {
		if value, ok := v[key]; ok {
			if value == nil {
				delete(v, key)
			} else if dest, ok := value.(map[string]interface{}); ok {
				src, ok := val.(map[string]interface{})
				if !ok {
					if val != nil {
						log.Printf("warning: skipped value for %s.%s: Not a table.", c.Metadata.Name, key)
					}
				} else {
					coalesceTables(dest, src, c.Metadata.Name+"."+key)
				}
			}
		} else {
			v[key] = val
		}
	}
	return v, nil
}

func coalesceTables(dst, src map[string]interface{}, prefix string) map[string]interface{} {
	if src == nil {
		return dst
	}
	if dst == nil {
		return src
	}
	for key, val := range src {
		fullkey := prefix + "." + key
		if dv, ok := dst[key]; ok && dv == nil {
			delete(dst, key)
		} else if !ok {
			dst[key] = val
		} else if istable(val) {
			if istable(dv) {
				coalesceTables(dv.(map[string]interface{}), val.(map[string]interface{}), fullkey)
			} else {
				log.Printf("warning: cannot overwrite table with non table for %s (%v)", fullkey, val)
			}
		} else if istable(dv) && val != nil {
			log.Printf("warning: destination for %s is a table. Ignoring non-table value (%v)", fullkey, val)
		}
	}
	return dst
}

// parseInto applies one --set argument ("a.b=1,c[0]=x,d={1,2}") to base, following Helm's
// strvals: "\" escapes the next character, "." nests, "[N]" indexes a list, "{a,b}" is a
// list, and unless asString the values are typed like Helm's typedVal.
func parseInto(s string, base map[string]interface{}, asString bool) error {
	for _, assignment := range splitUnescaped(s, ',', true) {
		if assignment == "" {
			continue
		}
		parts := splitUnescaped(assignment, '=', false)
		if len(parts) < 2 {
			return fmt.Errorf("key %q has no value", unescape(assignment))
		}
		key := parts[0]
		raw := strings.Join(parts[1:], "=")
		var value interface{}
		if strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}") {
			list := []interface{}{}
			for _, item := range splitUnescaped(raw[1:len(raw)-1], ',', false) {
				list = append(list, typedVal(unescape(item), asString))
			}
			value = list
		} else {
			value = typedVal(unescape(raw), asString)
		}
		path, err := parseKey(key)
		if err != nil {
			return err
		}
		// The first step is a key, so base (a map) is updated in place.
		if _, err := setPath(base, path, value); err != nil {
			return err
		}
	}
	return nil
}

// splitUnescaped splits on sep where it is not escaped by "\" (and, with braces, not inside
// "{...}"); escapes are kept for unescape.
func splitUnescaped(s string, sep rune, braces bool) []string {
	var out []string
	var cur strings.Builder
	depth := 0
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune('\\')
			cur.WriteRune(r)
			escaped = false
		case r == '\\':
			escaped = true
		case braces && r == '{':
			depth++
			cur.WriteRune(r)
		case braces && r == '}' && depth > 0:
			depth--
			cur.WriteRune(r)
		case r == sep && depth == 0:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if escaped {
		cur.WriteRune('\\')
	}
	return append(out, cur.String())
}

func unescape(s string) string {
	var b strings.Builder
	escaped := false
	for _, r := range s {
		if !escaped && r == '\\' {
			escaped = true
			continue
		}
		escaped = false
		b.WriteRune(r)
	}
	return b.String()
}

// keyStep is one step of a --set key: a map key or a list index.
type keyStep struct {
	key   string
	index int
	isIdx bool
}

func parseKey(key string) ([]keyStep, error) {
	var steps []keyStep
	for _, seg := range splitUnescaped(key, '.', false) {
		name := seg
		var idx []int
		// Trailing [N] groups (unescaped).
		for strings.HasSuffix(name, "]") && !strings.HasSuffix(name, "\\]") {
			open := strings.LastIndex(name, "[")
			if open < 0 {
				return nil, fmt.Errorf("key %q has an unmatched ]", unescape(key))
			}
			n, err := strconv.Atoi(name[open+1 : len(name)-1])
			if err != nil || n < 0 {
				return nil, fmt.Errorf("failed to parse index %q in key %q", name[open+1:len(name)-1], unescape(key))
			}
			idx = append([]int{n}, idx...)
			name = name[:open]
		}
		if name == "" && len(steps) == 0 && len(idx) == 0 {
			return nil, fmt.Errorf("key %q has an empty segment", unescape(key))
		}
		if name != "" {
			steps = append(steps, keyStep{key: unescape(name)})
		}
		for _, n := range idx {
			steps = append(steps, keyStep{index: n, isIdx: true})
		}
	}
	if len(steps) == 0 || steps[0].isIdx {
		return nil, fmt.Errorf("key %q must start with a name", unescape(key))
	}
	return steps, nil
}

// setPath sets value at path inside container (a map or list, or nil) and returns the new
// container.
func setPath(container interface{}, path []keyStep, value interface{}) (interface{}, error) {
	if len(path) == 0 {
		return value, nil
	}
	step := path[0]
	if step.isIdx {
		if step.index > 65536 {
			return nil, fmt.Errorf("index of %d is greater than maximum supported index 65536", step.index)
		}
		list, _ := container.([]interface{})
		for len(list) <= step.index {
			list = append(list, nil)
		}
		v, err := setPath(list[step.index], path[1:], value)
		if err != nil {
			return nil, err
		}
		list[step.index] = v
		return list, nil
	}
	m, ok := container.(map[string]interface{})
	if !ok {
		m = map[string]interface{}{}
	}
	v, err := setPath(m[step.key], path[1:], value)
	if err != nil {
		return nil, err
	}
	m[step.key] = v
	return m, nil
}

// typedVal is Helm's strvals.typedVal.
func typedVal(val string, asString bool) interface{} {
	if asString {
		return val
	}
	if strings.EqualFold(val, "true") {
		return true
	}
	if strings.EqualFold(val, "false") {
		return false
	}
	if strings.EqualFold(val, "null") {
		return nil
	}
	if strings.EqualFold(val, "0") {
		return int64(0)
	}
	if len(val) != 0 && val[0] != '0' {
		if iv, err := strconv.ParseInt(val, 10, 64); err == nil {
			return iv
		}
	}
	return val
}
