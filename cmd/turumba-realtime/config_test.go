package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBadConfigExitsNamingTheVariable runs the binary with one bad value at a
// time: it must exit non-zero at once, name the variable and its flag, and
// never print a password.
func TestBadConfigExitsNamingTheVariable(t *testing.T) {
	t.Parallel()
	binary(t) // built before the clocks start
	valid := map[string]string{"COGNITO_USER_POOL_ID": "us-east-1_test", "PORT": strconv.Itoa(freePort(t))}
	cases := []struct {
		name, variable string
		env            map[string]string
		args           []string
	}{
		{name: "port not a number", variable: "PORT", env: map[string]string{"PORT": "abc"}},
		{name: "port out of range", variable: "PORT", env: map[string]string{"PORT": "70000"}},
		{name: "port flag", variable: "PORT", args: []string{"-port", "abc"}},
		{name: "broker not amqp", variable: "RABBITMQ_URL", env: map[string]string{"RABBITMQ_URL": "http://x"}},
		{name: "broker port", variable: "RABBITMQ_URL", env: map[string]string{"RABBITMQ_URL": "amqp://u:s3cret@h:99999"}},
		{name: "redis not a url", variable: "REDIS_URL", env: map[string]string{"REDIS_URL": "foo"}},
		{name: "redis database", variable: "REDIS_URL", env: map[string]string{"REDIS_URL": "redis://:s3cret@h:6379/notadb"}},
		{name: "redis password unescaped", variable: "REDIS_URL", env: map[string]string{"REDIS_URL": "redis://u:s3cret with space@h"}},
		{name: "no pool outside dev", variable: "COGNITO_USER_POOL_ID", env: map[string]string{"COGNITO_USER_POOL_ID": ""}},
		{name: "pool id", variable: "COGNITO_USER_POOL_ID", env: map[string]string{"COGNITO_USER_POOL_ID": "bad/pool"}},
		{name: "region", variable: "AWS_REGION", env: map[string]string{"AWS_REGION": "eu west"}},
		{name: "jwks", variable: "JWKS_URI", env: map[string]string{"JWKS_URI": "ftp://keys"}},
		{name: "issuer", variable: "COGNITO_ISSUER", env: map[string]string{"COGNITO_ISSUER": "not a url"}},
		{name: "token use", variable: "COGNITO_TOKEN_USE", env: map[string]string{"COGNITO_TOKEN_USE": "refresh"}},
		{name: "prefetch", variable: "RABBITMQ_PREFETCH", env: map[string]string{"RABBITMQ_PREFETCH": "0"}},
		{name: "queue", variable: "RABBITMQ_QUEUE", env: map[string]string{"RABBITMQ_QUEUE": strings.Repeat("q", 300)}},
		{name: "presence ttl", variable: "PRESENCE_TTL_SECONDS", env: map[string]string{"PRESENCE_TTL_SECONDS": "0"}},
		{name: "typing ttl", variable: "TYPING_TTL_SECONDS", env: map[string]string{"TYPING_TTL_SECONDS": "1.5"}},
		{name: "shutdown timeout", variable: "SHUTDOWN_TIMEOUT", env: map[string]string{"SHUTDOWN_TIMEOUT": "soon"}},
		{name: "recovery window", variable: "RECOVERY_WINDOW", env: map[string]string{"RECOVERY_WINDOW": "forever"}},
		{name: "handshake timeout", variable: "HANDSHAKE_TIMEOUT", env: map[string]string{"HANDSHAKE_TIMEOUT": "0s"}},
		{name: "log level", variable: "LOG_LEVEL", env: map[string]string{"LOG_LEVEL": "loud"}},
		{name: "log format", variable: "LOG_FORMAT", env: map[string]string{"LOG_FORMAT": "xml"}},
		{name: "cors", variable: "CORS_ORIGINS", env: map[string]string{"CORS_ORIGINS": "example.com"}},
		{name: "dev not a bool", variable: "DEV", env: map[string]string{"DEV": "maybe"}},
		{name: "dev on every address", variable: "HOST", env: map[string]string{"HOST": "0.0.0.0"}, args: []string{"-dev"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range valid {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			start := time.Now()
			r := runBinary(t, env, tc.args...)
			if r.code == 0 {
				t.Fatalf("exit code 0, want non-zero; output:\n%s", r.output)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %v to refuse the configuration", took)
			}
			if want := tc.variable + " (-" + flagName(tc.variable) + ")"; !strings.Contains(r.output, want) {
				t.Errorf("output does not name %s:\n%s", want, r.output)
			}
			if strings.Contains(r.output, "s3cret") {
				t.Errorf("output shows the password:\n%s", r.output)
			}
			if strings.Contains(r.output, "listening") {
				t.Errorf("started serving with a bad configuration:\n%s", r.output)
			}
		})
	}
}

// TestConfigFlagsOverrideEnvironment checks the resolution order: flag, then
// environment (an empty value counts), then the (dev) default.
func TestConfigFlagsOverrideEnvironment(t *testing.T) {
	t.Parallel()
	env := map[string]string{"PORT": "4000", "REDIS_URL": "", "COGNITO_USER_POOL_ID": "us-east-1_x", "LOG_LEVEL": "debug"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := loadConfig([]string{"-port", "4100", "-shutdown-timeout", "3s"}, lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != "4100" || cfg.ShutdownTimeout != 3*time.Second {
		t.Errorf("flags did not win: port %s, shutdown timeout %v", cfg.Port, cfg.ShutdownTimeout)
	}
	if cfg.RedisURL != "" {
		t.Errorf("REDIS_URL set to empty must turn Redis off, got %q", cfg.RedisURL)
	}
	if cfg.RabbitURL != "amqp://guest:guest@localhost:5672" || cfg.Host != "0.0.0.0" || cfg.LogFormat != "json" {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if cfg.LogLevel.String() != "DEBUG" {
		t.Errorf("LOG_LEVEL from the environment not applied: %v", cfg.LogLevel)
	}

	dev, err := loadConfig([]string{"-dev"}, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !dev.Dev || dev.Host != "127.0.0.1" || dev.RabbitURL != "" || dev.RedisURL != "" || dev.LogFormat != "text" {
		t.Errorf("dev defaults not applied: %+v", dev)
	}
}

// readEnvExample returns the variables of .env.example with their values.
func readEnvExample(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`).MatchString(k) {
			t.Fatalf(".env.example:%d: not NAME=value: %q", n, line)
		}
		if _, dup := vars[k]; dup {
			t.Errorf(".env.example:%d: %s twice", n, k)
		}
		vars[k] = v
	}
	return vars
}

// TestEnvExampleListsEverySetting: .env.example and settings() name the same
// variables, each with its default.
func TestEnvExampleListsEverySetting(t *testing.T) {
	t.Parallel()
	vars := readEnvExample(t)
	known := map[string]bool{}
	for _, s := range settings() {
		known[s.env] = true
		v, ok := vars[s.env]
		if !ok {
			t.Errorf(".env.example lacks %s", s.env)
			continue
		}
		if v != s.def {
			t.Errorf(".env.example: %s=%q, but its default is %q", s.env, v, s.def)
		}
	}
	for k := range vars {
		if !known[k] {
			t.Errorf(".env.example sets %s, which the binary does not know", k)
		}
	}
}

// TestDeployFilesUseKnownVariables: the variables docker-compose.yml gives the
// service are ones the binary knows, and the Dockerfile's HEALTHCHECK and
// port agree with the binary.
func TestDeployFilesUseKnownVariables(t *testing.T) {
	t.Parallel()
	known := map[string]bool{}
	for _, s := range settings() {
		known[s.env] = true
	}
	compose, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	// Service variables are written "- NAME=value" in environment lists.
	envLine := regexp.MustCompile(`(?m)^\s+- ([A-Z][A-Z0-9_]*)=`)
	found := 0
	for _, m := range envLine.FindAllStringSubmatch(string(compose), -1) {
		found++
		if !known[m[1]] && !strings.HasPrefix(m[1], "RABBITMQ_DEFAULT_") {
			t.Errorf("docker-compose.yml sets %s, which the binary does not know", m[1])
		}
	}
	if found == 0 {
		t.Error("docker-compose.yml: no environment entries found")
	}
	docker, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"-healthcheck", "EXPOSE 3200", "USER ", "CGO_ENABLED=0"} {
		if !strings.Contains(string(docker), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// TestOperationsDocListsEverySetting: docs/operations.md has a row for every
// variable with its flag and default.
func TestOperationsDocListsEverySetting(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(doc), "\n") {
		if m := regexp.MustCompile("^\\| `([A-Z][A-Z0-9_]*)` \\|").FindStringSubmatch(line); m != nil {
			rows[m[1]] = line
		}
	}
	var names []string
	for _, s := range settings() {
		names = append(names, s.env)
		row, ok := rows[s.env]
		if !ok {
			t.Errorf("docs/operations.md has no row for %s", s.env)
			continue
		}
		if !strings.Contains(row, "`-"+flagName(s.env)+"`") {
			t.Errorf("docs/operations.md: the row of %s does not name -%s", s.env, flagName(s.env))
		}
		if s.def != "" && !strings.Contains(row, s.def) {
			t.Errorf("docs/operations.md: the row of %s does not give its default %q", s.env, s.def)
		}
	}
	for k := range rows {
		if !slices.Contains(names, k) {
			t.Errorf("docs/operations.md documents %s, which the binary does not know", k)
		}
	}
}

// TestHealthcheckFlag: -healthcheck exits 0 against a healthy server and 1
// when nothing listens.
func TestHealthcheckFlag(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "dev", nil, "-dev")
	port := strings.TrimPrefix(srv.url, "http://127.0.0.1:")
	env := map[string]string{"PORT": port, "HOST": "0.0.0.0", "COGNITO_USER_POOL_ID": "us-east-1_test"}
	if r := runBinary(t, env, "-healthcheck"); r.code != 0 {
		t.Errorf("healthy server: exit %d: %s", r.code, r.output)
	}
	env["PORT"] = strconv.Itoa(freePort(t))
	if r := runBinary(t, env, "-healthcheck"); r.code != 1 || !strings.Contains(r.output, "healthcheck") {
		t.Errorf("no server: exit %d: %s", r.code, r.output)
	}
	// The server it probed is unaffected.
	if code, _ := srv.get("/health"); code != http.StatusOK {
		t.Errorf("/health: %d", code)
	}
}
