package audit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/brokerd/brokerd/audit"
)

// TestReportText: what audit verify prints, for a log that verified (with
// an anchor, a checkpoint and records after it) and for one that did not.
func TestReportText(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 23, 14, 2, 11, 0, time.UTC)
	for _, tc := range []struct {
		name string
		rep  audit.Report
		want string
	}{
		{"failed", audit.Report{Records: 40, Problem: "records 40 to 41 are missing"}, "FAILED: records 40 to 41 are missing\n"},
		{"verified", audit.Report{Records: 1523, FirstSeq: 1, LastSeq: 1523, Checkpoints: 3, Uncovered: 23,
			LastCheckpoint: &audit.Checkpoint{Seq: 1500, Time: at, TPMClock: 81233311, RestartCount: 4}},
			"1523 records (1 to 1523), 3 checkpoints\n" +
				"last checkpoint: record 1500 at 2026-11-23T14:02:11Z (TPM clock 81233311 ms, reset 0, restart 4)\n" +
				"23 records after the last checkpoint are not signed yet\nok\n"},
		{"pruned", audit.Report{Records: 10, FirstSeq: 91, LastSeq: 100, Pruned: &audit.Anchor{FirstSeq: 91, PrunedBefore: at}},
			"records before 91 were pruned (before 2026-11-23T14:02:11Z); the signed anchor holds\n10 records (91 to 100), 0 checkpoints\nok\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := tc.rep.WriteText(&b); err != nil || b.String() != tc.want {
				t.Errorf("got %q (%v), want %q", b.String(), err, tc.want)
			}
		})
	}
}
