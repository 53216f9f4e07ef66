package audit

import (
	"fmt"
	"io"
	"time"
)

// WriteText prints the report for a person: the problem when verification
// failed (the counts would mislead: they stop where verification
// stopped), else what was verified, ending with "ok".
func (r *Report) WriteText(w io.Writer) error {
	if !r.OK() {
		_, err := fmt.Fprintf(w, "FAILED: %s\n", r.Problem)
		return err
	}
	if r.Pruned != nil {
		fmt.Fprintf(w, "records before %d were pruned (before %s); the signed anchor holds\n",
			r.Pruned.FirstSeq, r.Pruned.PrunedBefore.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "%d records (%d to %d), %d checkpoints\n", r.Records, r.FirstSeq, r.LastSeq, r.Checkpoints)
	if c := r.LastCheckpoint; c != nil {
		fmt.Fprintf(w, "last checkpoint: record %d at %s (TPM clock %d ms, reset %d, restart %d)\n",
			c.Seq, c.Time.Format(time.RFC3339), c.TPMClock, c.ResetCount, c.RestartCount)
	}
	if r.Uncovered > 0 {
		fmt.Fprintf(w, "%d records after the last checkpoint are not signed yet\n", r.Uncovered)
	}
	_, err := fmt.Fprintln(w, "ok")
	return err
}
