package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// configVariables lists every SESSIOND_* variable that LoadConfig reads.
func configVariables(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	vars := make(map[string]bool)
	for _, m := range regexp.MustCompile(`"(SESSIOND_[A-Z_]+)"`).FindAllSubmatch(b, -1) {
		vars[string(m[1])] = true
	}
	if len(vars) < 10 {
		t.Fatalf("found only %d SESSIOND_ variables in config.go", len(vars))
	}
	return vars
}

type k8sEnv struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct{ Name, Key string } `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name          string    `yaml:"name"`
	RestartPolicy string    `yaml:"restartPolicy"`
	Env           []k8sEnv  `yaml:"env"`
	Liveness      *k8sProbe `yaml:"livenessProbe"`
	Readiness     *k8sProbe `yaml:"readinessProbe"`
	Ports         []struct {
		Name string `yaml:"name"`
		Port int    `yaml:"containerPort"`
	} `yaml:"ports"`
	SecurityContext struct {
		RunAsUser      int  `yaml:"runAsUser"`
		ReadOnlyRootFS bool `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
}

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Template struct {
			Spec struct {
				Grace           int            `yaml:"terminationGracePeriodSeconds"`
				InitContainers  []k8sContainer `yaml:"initContainers"`
				Containers      []k8sContainer `yaml:"containers"`
				SecurityContext struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// TestK8sSidecarExample keeps configs/k8s-sidecar.yaml consistent with the
// daemon: known variables only, secrets from the Secret, probes on the
// right paths and port, and a grace period that covers the shutdown.
func TestK8sSidecarExample(t *testing.T) {
	t.Parallel()
	known := configVariables(t)
	b, err := os.ReadFile("../../configs/k8s-sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var secret, deploy *k8sObject
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("k8s-sidecar.yaml: %v", err)
		}
		switch o.Kind {
		case "Secret":
			secret = &o
		case "Deployment":
			deploy = &o
		}
	}
	if secret == nil || deploy == nil {
		t.Fatalf("want a Secret and a Deployment")
	}
	pod := deploy.Spec.Template.Spec
	all := slices.Concat(pod.InitContainers, pod.Containers)
	i := slices.IndexFunc(all, func(c k8sContainer) bool { return c.Name == "sessiond" })
	if i < 0 {
		t.Fatal("no sessiond container")
	}
	side := &all[i]
	if slices.ContainsFunc(pod.InitContainers, func(c k8sContainer) bool { return c.Name == "sessiond" }) && side.RestartPolicy != "Always" {
		t.Errorf("sessiond as an init container needs restartPolicy: Always (a native sidecar)")
	}
	env := make(map[string]k8sEnv)
	for _, e := range side.Env {
		env[e.Name] = e
		if strings.HasPrefix(e.Name, "SESSIOND_") && !known[e.Name] {
			t.Errorf("env %s: sessiond reads no such variable", e.Name)
		}
	}
	for _, name := range []string{"SESSIOND_REDIS_URL", "SESSIOND_API_SECRET", "SESSIOND_WEBHOOK_SECRET", "SESSIOND_UI_PASSWORD"} {
		e, ok := env[name]
		if !ok || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("env %s: want it from a secretKeyRef, got %+v", name, e)
			continue
		}
		if ref := e.ValueFrom.SecretKeyRef; ref.Name != secret.Metadata.Name || secret.StringData[ref.Key] == "" {
			t.Errorf("env %s: secret %s key %s is not in the example Secret", name, ref.Name, ref.Key)
		}
	}
	_, port, err := net.SplitHostPort(env["SESSIOND_ADMIN_ADDR"].Value)
	if err != nil {
		t.Fatalf("SESSIOND_ADMIN_ADDR: %v", err)
	}
	if len(side.Ports) == 0 || port != strconv.Itoa(side.Ports[0].Port) {
		t.Errorf("containerPort %v, admin address port %s", side.Ports, port)
	}
	for _, p := range []struct {
		name  string
		probe *k8sProbe
		path  string
	}{{"livenessProbe", side.Liveness, "/healthz"}, {"readinessProbe", side.Readiness, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s: want httpGet %s", p.name, p.path)
			continue
		}
		if pp := p.probe.HTTPGet.Port; pp != side.Ports[0].Name && pp != side.Ports[0].Port {
			t.Errorf("%s: port %v is not the admin port", p.name, pp)
		}
	}
	drain, _ := time.ParseDuration(env["SESSIOND_SHUTDOWN_DRAIN_DELAY"].Value)
	timeout, _ := time.ParseDuration(env["SESSIOND_SHUTDOWN_TIMEOUT"].Value)
	if timeout == 0 {
		timeout = defaultShutdownTimeout
	}
	if grace := time.Duration(pod.Grace) * time.Second; grace <= drain+timeout {
		t.Errorf("terminationGracePeriodSeconds %v <= drain delay %v + shutdown timeout %v: the kubelet would SIGKILL mid-drain", grace, drain, timeout)
	}
	if !pod.SecurityContext.RunAsNonRoot || side.SecurityContext.RunAsUser == 0 || !side.SecurityContext.ReadOnlyRootFS {
		t.Errorf("want runAsNonRoot, a non-zero runAsUser and a read-only root filesystem")
	}
}

// TestComposeExample keeps configs/docker-compose.yaml consistent: Redis
// with AOF and noeviction, sessiond with known variables and a stop grace
// period that covers its shutdown timeout.
func TestComposeExample(t *testing.T) {
	t.Parallel()
	known := configVariables(t)
	b, err := os.ReadFile("../../configs/docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			StopGrace   string            `yaml:"stop_grace_period"`
			DependsOn   map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
			Build struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"build"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	redis, sd := c.Services["redis"], c.Services["sessiond"]
	cmd := strings.Join(redis.Command, " ")
	for _, want := range []string{"--appendonly yes", "--appendfsync", "--maxmemory-policy noeviction"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis command %q lacks %q", cmd, want)
		}
	}
	for name := range sd.Environment {
		if !known[name] {
			t.Errorf("sessiond env %s: sessiond reads no such variable", name)
		}
	}
	if !strings.Contains(sd.Environment["SESSIOND_REDIS_URL"], "@redis:6379") {
		t.Errorf("SESSIOND_REDIS_URL = %q, want the redis service", sd.Environment["SESSIOND_REDIS_URL"])
	}
	if sd.DependsOn["redis"].Condition != "service_healthy" {
		t.Errorf("sessiond should wait for a healthy redis")
	}
	grace, _ := time.ParseDuration(sd.StopGrace)
	timeout, _ := time.ParseDuration(sd.Environment["SESSIOND_SHUTDOWN_TIMEOUT"])
	if grace <= timeout {
		t.Errorf("stop_grace_period %v <= SESSIOND_SHUTDOWN_TIMEOUT %v", grace, timeout)
	}
	if _, err := os.Stat("../../configs/" + sd.Build.Context + "/" + sd.Build.Dockerfile); err != nil {
		t.Errorf("build: %v", err)
	}
}
