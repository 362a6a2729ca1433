// Command validate checks the deployment files with the libraries the real tools use: the
// compose file with compose-go (what `docker compose config` runs: the Compose specification's
// schema, interpolation, references between services), Dockerfiles with BuildKit's parser and
// build-check linter (what `docker build --check` runs), and Prometheus rule files with
// Prometheus's own rule parser (what `promtool check rules` runs: YAML structure, PromQL
// expressions, templates). A compose service built from a Dockerfile must name a stage it has.
// It exits 1 naming each file and problem.
//
//	go -C infra/validate run . -dockerfile ../deploy/Dockerfile -compose ../deploy/compose.yaml \
//	    -rules ../prometheus/alerts.yml
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	promql "github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

func main() {
	var composeFiles, dockerfiles, ruleFiles multi
	flag.Var(&composeFiles, "compose", "a compose file (repeatable)")
	flag.Var(&dockerfiles, "dockerfile", "a Dockerfile (repeatable)")
	flag.Var(&ruleFiles, "rules", "a Prometheus rule file (repeatable)")
	flag.Parse()
	failed := false
	stagesOf := map[string]map[string]bool{}
	for _, f := range dockerfiles {
		stages, problems := checkDockerfile(f)
		if len(problems) > 0 {
			for _, p := range problems {
				fmt.Fprintf(os.Stderr, "%s: %s\n", f, p)
			}
			failed = true
			continue
		}
		abs, _ := filepath.Abs(f)
		stagesOf[abs] = stages
		fmt.Printf("%s: valid Dockerfile, %d stages\n", f, len(stages))
	}
	for _, f := range composeFiles {
		services, err := checkCompose(f, stagesOf)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			failed = true
			continue
		}
		fmt.Printf("%s: valid compose file, %d services\n", f, services)
	}
	for _, f := range ruleFiles {
		groups, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, promql.NewParser(promql.Options{}), slog.Default())
		if len(errs) > 0 {
			for _, e := range errs {
				fmt.Fprintf(os.Stderr, "%s: %v\n", f, e)
			}
			failed = true
			continue
		}
		rules := 0
		for _, g := range groups.Groups {
			rules += len(g.Rules)
		}
		fmt.Printf("%s: valid rule file, %d groups, %d rules\n", f, len(groups.Groups), rules)
	}
	if failed {
		os.Exit(1)
	}
}

// checkCompose loads a compose file as `docker compose config` does, with placeholder values for
// the variables it requires, and returns its service count (profiled services included).
func checkCompose(file string, stagesOf map[string]map[string]bool) (int, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return 0, err
	}
	opts, err := cli.NewProjectOptions([]string{abs},
		cli.WithOsEnv,
		cli.WithEnv([]string{"OWSU_S3_SECRET=placeholder-for-validation"}),
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithProfiles([]string{"*"}),
	)
	if err != nil {
		return 0, err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return 0, err
	}
	// A build of a Dockerfile checked here must name one of its stages.
	for name, svc := range project.Services {
		if svc.Build == nil || svc.Build.Target == "" {
			continue
		}
		df := svc.Build.Dockerfile
		if !filepath.IsAbs(df) {
			df = filepath.Join(svc.Build.Context, df)
		}
		if stages, ok := stagesOf[df]; ok && !stages[svc.Build.Target] {
			return 0, fmt.Errorf("service %s builds target %q, which %s does not define", name, svc.Build.Target, df)
		}
	}
	// The normalised model must serialise again (as `docker compose config` prints it).
	if _, err := yaml.Marshal(project); err != nil {
		return 0, err
	}
	return len(project.Services), nil
}

// checkDockerfile parses a Dockerfile as BuildKit does and runs its build checks (every
// warning counts as a problem); returns its stage names.
func checkDockerfile(file string) (map[string]bool, []string) {
	f, err := os.Open(file)
	if err != nil {
		return nil, []string{err.Error()}
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		return nil, []string{err.Error()}
	}
	var problems []string
	for _, w := range res.Warnings {
		problems = append(problems, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, description, url, msg string, location []parser.Range) {
		line := 0
		if len(location) > 0 {
			line = location[0].Start.Line
		}
		problems = append(problems, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	if err != nil {
		problems = append(problems, err.Error())
	}
	names := map[string]bool{}
	for _, s := range stages {
		names[s.Name] = true
	}
	return names, problems
}

type multi []string

func (m *multi) String() string     { return fmt.Sprint(*m) }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
