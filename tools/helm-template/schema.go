package main

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

// validateAgainstSchema checks the coalesced values against values.schema.json like Helm's
// chartutil.ValidateAgainstSchema (gojsonschema, as in Helm up to 3.17).
func validateAgainstSchema(c *Chart, values map[string]interface{}) error {
	if c.Schema == nil {
		return nil
	}
	if err := validateAgainstSingleSchema(values, c.Schema); err != nil {
		return fmt.Errorf("%s:\n%s", c.Metadata.Name, err)
	}
	return nil
}

func validateAgainstSingleSchema(values map[string]interface{}, schemaJSON []byte) error {
	valuesData, err := yaml.Marshal(values)
	if err != nil {
		return err
	}
	valuesJSON, err := yaml.YAMLToJSON(valuesData)
	if err != nil {
		return err
	}
	if bytes.Equal(valuesJSON, []byte("null")) {
		valuesJSON = []byte("{}")
	}
	result, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schemaJSON), gojsonschema.NewBytesLoader(valuesJSON))
	if err != nil {
		return err
	}
	if !result.Valid() {
		var sb strings.Builder
		for _, desc := range result.Errors() {
			sb.WriteString(fmt.Sprintf("- %s\n", desc))
		}
		return fmt.Errorf("%s", sb.String())
	}
	return nil
}
