// compose-validate loads one Compose file with the Compose specification's Go loader
// (github.com/compose-spec/compose-go/v2, the one `docker compose config` uses):
// schema validation, interpolation and normalisation.  Any error, and any warning the
// loader logs (an unset variable without a default, an obsolete attribute...), fails
// the file: exit status 1 with the messages on stderr.  Otherwise it prints the
// normalised model as JSON on stdout.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/sirupsen/logrus"
)

// warnings records what the loader logs at warning level or above (an unset variable
// "defaulting to a blank string", an obsolete attribute...): each one fails the file.
type warnings struct{ seen []string }

func (w *warnings) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (w *warnings) Fire(entry *logrus.Entry) error {
	w.seen = append(w.seen, entry.Message)
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-validate FILE.yaml")
		os.Exit(2)
	}
	logged := &warnings{}
	logrus.AddHook(logged)
	file, err := filepath.Abs(os.Args[1])
	if err != nil {
		fail(err)
	}
	options, err := cli.NewProjectOptions(
		[]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	if len(logged.seen) > 0 {
		for _, message := range logged.seen {
			fmt.Fprintln(os.Stderr, "compose-validate: warning:", message)
		}
		fail(fmt.Errorf("%d warning(s) loading %s", len(logged.seen), file))
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
	os.Stdout.WriteString("\n")
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compose-validate:", err)
	os.Exit(1)
}
