// helmrender renders a Helm chart's templates the way `helm template` does, for the deploy checks on
// a machine without Helm (Debian does not package it): Go's text/template with the Sprig functions
// (Debian's golang-github-masterminds-sprig-dev, the library Helm uses) and Helm's own include,
// required, toYaml (sigs.k8s.io/yaml's behaviour, through its origin github.com/ghodss/yaml), fail
// and .Files-less built-ins (.Values, .Release, .Chart). Stricter than Helm in one respect: a missing
// value is an error (missingkey=error) rather than an empty string.
//
// Usage: helmrender CHART_DIR NAMESPACE [--set a.b=v | --set-file a.b=FILE]...
// Prints the rendered documents, each after a "# Source: <template>" line, separated by "---".
package main

import (
	"bytes"
	"fmt"
	"io/ioutil"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/ghodss/yaml"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "helmrender: "+format+"\n", a...)
	os.Exit(1)
}

func readYAML(path string) map[string]interface{} {
	b, err := ioutil.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		fail("%s: %v", path, err)
	}
	return m
}

// set puts v at the dotted path in m (as --set does; numbers and booleans are typed).
func set(m map[string]interface{}, path string, v interface{}) {
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
}

func typed(s string) interface{} {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	if b, err := strconv.ParseBool(s); err == nil {
		return b
	}
	return s
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: helmrender CHART_DIR NAMESPACE [--set a.b=v | --set-file a.b=FILE]...")
	}
	dir, ns := os.Args[1], os.Args[2]
	chart := readYAML(filepath.Join(dir, "Chart.yaml"))
	values := readYAML(filepath.Join(dir, "values.yaml"))
	for i := 3; i < len(os.Args); i += 2 {
		if i+1 >= len(os.Args) {
			fail("%s needs an argument", os.Args[i])
		}
		kv := strings.SplitN(os.Args[i+1], "=", 2)
		if len(kv) != 2 {
			fail("%s wants a.b=value, got %q", os.Args[i], os.Args[i+1])
		}
		switch os.Args[i] {
		case "--set":
			set(values, kv[0], typed(kv[1]))
		case "--set-file":
			b, err := ioutil.ReadFile(kv[1])
			if err != nil {
				fail("%v", err)
			}
			set(values, kv[0], string(b))
		default:
			fail("unknown option %s", os.Args[i])
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "templates", "*"))
	sort.Strings(files)
	root := template.New("chart").Option("missingkey=error")
	funcs := sprig.TxtFuncMap()
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var b bytes.Buffer
		err := root.ExecuteTemplate(&b, name, data)
		return b.String(), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", fmt.Errorf("%s", msg) }
	funcs["toYaml"] = func(v interface{}) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(b), "\n")
	}
	root.Funcs(funcs)
	var docs []string
	for _, f := range files {
		b, err := ioutil.ReadFile(f)
		if err != nil {
			fail("%v", err)
		}
		if _, err := root.New(filepath.Base(f)).Parse(string(b)); err != nil {
			fail("%v", err)
		}
		if !strings.HasPrefix(filepath.Base(f), "_") {
			docs = append(docs, filepath.Base(f))
		}
	}
	data := map[string]interface{}{
		"Values":  values,
		"Release": map[string]interface{}{"Name": "cloister", "Namespace": ns, "Service": "Helm", "IsInstall": true},
		"Chart":   map[string]interface{}{"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
	}
	for _, name := range docs {
		var b bytes.Buffer
		if err := root.ExecuteTemplate(&b, name, data); err != nil {
			fail("%v", err)
		}
		fmt.Printf("---\n# Source: %s/templates/%s\n%s\n", chart["name"], name, strings.TrimSpace(b.String()))
	}
}
