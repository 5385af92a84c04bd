// Copied into FerretDB's internal/util/resource after patch_ferretdb.sh by
// tests/integration/test_document_server_patches.py.
package resource

import (
	"runtime/pprof"
	"testing"
)

type yiwangProbe struct {
	token *Token
}

func TestYiwangReleaseBuildsTrackNothing(t *testing.T) {
	probe := &yiwangProbe{token: NewToken()}
	Track(probe, probe.token)
	// Tracking adds the object to a pprof profile of its type (and sets a finalizer).
	if p := pprof.Lookup(profileName(probe)); p != nil && p.Count() != 0 {
		t.Errorf("%d objects tracked in %s; want none in a release build", p.Count(), p.Name())
	}
	Untrack(probe, probe.token)
}
