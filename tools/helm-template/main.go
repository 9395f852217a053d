// Command helm-template renders a Helm chart the way `helm template` does, for tests on machines
// where the helm binary cannot be installed. It uses the same template engine as Helm (Go's
// text/template with sprig v3 and Helm's own functions), Helm's value coalescing, the values
// schema check with gojsonschema (what Helm up to 3.17 uses) and Helm's manifest sorting and
// output format. README.md lists what it implements and where it differs from Helm.
package main

import (
	"fmt"
	"os"
	"strings"
)

const usage = `usage: helm-template [NAME] CHART [flags]

Renders CHART (a chart directory) like "helm template NAME CHART".

flags:
  -f, --values FILE          values file (repeatable; later files win)
      --set K=V[,K=V]        set values (typed: ints, true/false, null, {a,b} lists)
      --set-string K=V       set values as strings
  -n, --namespace NS         .Release.Namespace (default "default")
      --kube-version V       .Capabilities.KubeVersion (default v1.32.0)
  -a, --api-versions G/V     extra .Capabilities.APIVersions entry (repeatable)
      --is-upgrade           .Release.IsUpgrade=true, .Release.IsInstall=false
      --notes                print the rendered templates/NOTES.txt instead of the manifests
`

type options struct {
	releaseName string
	chartDir    string
	valueFiles  []string
	setValues   []string
	setStrings  []string
	namespace   string
	kubeVersion string
	apiVersions []string
	isUpgrade   bool
	notes       bool
}

func parseArgs(args []string) (*options, error) {
	o := &options{namespace: "default", kubeVersion: defaultKubeVersion}
	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		name, value, hasValue := arg, "", false
		if strings.HasPrefix(arg, "--") {
			if eq := strings.IndexByte(arg, '='); eq >= 0 {
				name, value, hasValue = arg[:eq], arg[eq+1:], true
			}
		}
		next := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag needs an argument: %s", name)
			}
			i++
			return args[i], nil
		}
		var err error
		var v string
		switch name {
		case "-f", "--values":
			if v, err = next(); err == nil {
				// Helm's --values is a string slice: a comma also separates files.
				o.valueFiles = append(o.valueFiles, strings.Split(v, ",")...)
			}
		case "--set":
			if v, err = next(); err == nil {
				o.setValues = append(o.setValues, v)
			}
		case "--set-string":
			if v, err = next(); err == nil {
				o.setStrings = append(o.setStrings, v)
			}
		case "-n", "--namespace":
			o.namespace, err = next()
		case "--kube-version":
			o.kubeVersion, err = next()
		case "-a", "--api-versions":
			if v, err = next(); err == nil {
				o.apiVersions = append(o.apiVersions, strings.Split(v, ",")...)
			}
		case "--is-upgrade":
			o.isUpgrade = true
		case "--notes":
			o.notes = true
		case "-h", "--help":
			return nil, fmt.Errorf("%s", usage)
		default:
			if strings.HasPrefix(arg, "-") {
				return nil, fmt.Errorf("unknown flag: %s\n%s", arg, usage)
			}
			positional = append(positional, arg)
		}
		if err != nil {
			return nil, err
		}
	}
	switch len(positional) {
	case 1:
		// `helm template CHART` names the release "release-name".
		o.releaseName, o.chartDir = "release-name", positional[0]
	case 2:
		o.releaseName, o.chartDir = positional[0], positional[1]
	default:
		return nil, fmt.Errorf("expected [NAME] CHART\n%s", usage)
	}
	return o, nil
}

// run renders the chart and returns what `helm template` prints on stdout.
func run(o *options) (string, error) {
	chart, err := loadChart(o.chartDir)
	if err != nil {
		return "", err
	}
	caps, err := newCapabilities(o.kubeVersion, o.apiVersions)
	if err != nil {
		return "", err
	}
	if err := checkKubeVersion(chart.Metadata, caps); err != nil {
		return "", err
	}
	userValues, err := mergeUserValues(o.valueFiles, o.setValues, o.setStrings)
	if err != nil {
		return "", err
	}
	values, err := coalesceValues(chart, userValues)
	if err != nil {
		return "", err
	}
	if err := validateAgainstSchema(chart, values); err != nil {
		return "", fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s", err)
	}
	release := map[string]interface{}{
		"Name":      o.releaseName,
		"Namespace": o.namespace,
		"IsUpgrade": o.isUpgrade,
		"IsInstall": !o.isUpgrade,
		"Revision":  1,
		"Service":   "Helm",
	}
	rendered, err := render(chart, values, release, caps)
	if err != nil {
		return "", err
	}
	notesName := chart.Metadata.Name + "/templates/NOTES.txt"
	if o.notes {
		return rendered[notesName], nil
	}
	delete(rendered, notesName)
	manifests, err := sortManifests(rendered)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, m := range manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Name, m.Content)
	}
	return b.String(), nil
}

func main() {
	o, err := parseArgs(os.Args[1:])
	if err == nil {
		var out string
		if out, err = run(o); err == nil {
			os.Stdout.WriteString(out)
			return
		}
	}
	fmt.Fprintf(os.Stderr, "Error: %s\n", err)
	os.Exit(1)
}
