// compose-validate loads one Compose file with the Compose specification's Go loader
// (github.com/compose-spec/compose-go/v2, the one `docker compose config` uses):
// schema validation, interpolation (an unset variable without a default is an error)
// and normalisation; it prints the normalised model as JSON on stdout and exits
// non-zero, with the loader's error on stderr, if any step fails.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-validate FILE.yaml")
		os.Exit(2)
	}
	file, err := filepath.Abs(os.Args[1])
	if err != nil {
		fail(err)
	}
	options, err := cli.NewProjectOptions(
		[]string{file},
		cli.WithName("kitsd"),
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
