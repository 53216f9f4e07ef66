package layering_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/brokerd/brokerd/"

// rank orders the packages: a package may import only packages of a lower
// rank, so every arrow points one way. Leaf helpers under internal/ (which
// import nothing of the module themselves) rank 0 and go anywhere; an
// internal package that imports the module's packages has a rank too.
var rank = map[string]int{
	"tpm": 1, "store": 1, "policy": 1, "jws": 1, "httpsig": 1,
	"keys": 2, "audit": 2, "admin": 2, "netstack": 2, "netstack/listener": 2, "netstack/bank": 2,
	"pki": 3, "internal/keyfile": 3,
	"broker":      4,
	"config":      5,
	"daemon":      6,
	"cmd/brokerd": 7,
}

// forbidden are imports that ranks alone would allow.
var forbidden = map[string][]string{
	"broker":            {"tpm", "store", "daemon"},
	"netstack/listener": {"broker", "netstack/bank"},
	"netstack/bank":     {"broker", "netstack/listener"},
	"audit":             {"keys", "tpm", "policy"},
}

type pkg struct {
	ImportPath string
	Imports    []string
}

// list returns the module's packages (both build variants) and their
// direct imports of module packages.
func list(t *testing.T) map[string][]string {
	out := map[string][]string{}
	for _, tags := range []string{"", "simulator"} {
		cmd := exec.Command("go", "list", "-tags", tags, "-json", "github.com/brokerd/brokerd/...")
		cmd.Dir = "../.."
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(stdout)
		for {
			var p pkg
			if err := dec.Decode(&p); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			name := strings.TrimPrefix(p.ImportPath, module)
			for _, imp := range p.Imports {
				if imp, ok := strings.CutPrefix(imp, module); ok && !slices.Contains(out[name], imp) {
					out[name] = append(out[name], imp)
				}
			}
			if _, ok := out[name]; !ok {
				out[name] = nil
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestImportsPointOneWay fails when someone adds an import against the
// layering: a package importing one of its rank or above, a forbidden
// import, or a package the table does not place.
func TestImportsPointOneWay(t *testing.T) {
	t.Parallel()
	pkgs := list(t)
	leaf := func(p string) bool { return strings.HasPrefix(p, "internal/") && len(pkgs[p]) == 0 }
	for p, imports := range pkgs {
		if _, ranked := rank[p]; strings.HasPrefix(p, "internal/") && !ranked {
			continue // helpers: leaves, or test support (mockbank, testpki)
		}
		r, ok := rank[p]
		if !ok {
			t.Errorf("package %s has no place in the layering: add it to rank", p)
			continue
		}
		for _, imp := range imports {
			switch {
			case leaf(imp):
			case strings.HasPrefix(imp, "internal/") && rank[imp] == 0:
				t.Errorf("%s imports %s, a helper that is not a leaf (it imports %v)", p, imp, pkgs[imp])
			case rank[imp] >= r:
				t.Errorf("%s (rank %d) imports %s (rank %d): imports must point down", p, r, imp, rank[imp])
			}
			for _, f := range forbidden[p] {
				if imp == f {
					t.Errorf("%s imports %s, which it must not", p, imp)
				}
			}
		}
	}
}
