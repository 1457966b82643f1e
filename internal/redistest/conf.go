package redistest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// This file renders redis.conf and sentinel.conf. Every value goes through
// quote, so a password may hold any byte.

// dataConf is the configuration of a data node (not a sentinel) listening on
// port with its files (and, with TLS, its certificates) in dir.
func dataConf(dir string, port int, o Options) []string {
	lines := []string{
		"bind 127.0.0.1",
		"protected-mode no",
		"dir " + quote(dir),
		"logfile " + quote(filepath.Join(dir, logName)),
		`save ""`,
		// Replicas sync at once instead of waiting 5 s for company.
		"repl-diskless-sync-delay 0",
	}
	if o.TLS {
		lines = append(lines,
			"port 0",
			"tls-port "+strconv.Itoa(port),
			"tls-cert-file "+quote(filepath.Join(dir, certName)),
			"tls-key-file "+quote(filepath.Join(dir, keyName)),
			"tls-ca-cert-file "+quote(filepath.Join(dir, caName)),
			"tls-auth-clients no",
		)
	} else {
		lines = append(lines, "port "+strconv.Itoa(port))
	}
	if o.AppendOnly {
		lines = append(lines, "appendonly yes", "appendfsync "+o.appendFsync())
	} else {
		lines = append(lines, "appendonly no")
	}
	if o.Password != "" {
		lines = append(lines, "requirepass "+quote(o.Password))
	}
	if o.ACLUser != "" {
		lines = append(lines, "user "+quote(o.ACLUser)+" on "+quote(">"+o.ACLPassword)+" ~* &* +@all")
	}
	return lines
}

// masterAuthConf lets a node authenticate to its master (replication) with
// the deployment's credentials.
func masterAuthConf(o Options) []string {
	user, pass := o.credentials()
	var lines []string
	if user != "" {
		lines = append(lines, "masteruser "+quote(user))
	}
	if pass != "" {
		lines = append(lines, "masterauth "+quote(pass))
	}
	return lines
}

// writeConf writes lines as the config file at path, readable only by its
// owner since it may hold passwords.
func writeConf(path string, lines []string) error {
	data := strings.Join(lines, "\n") + "\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// setReplicaOf rewrites the replicaof line of the config file at path (Redis
// itself may have rewritten the file since it was written: CONFIG REWRITE,
// which Sentinel sends) to follow masterAddr.
func setReplicaOf(path, masterHost, masterPort string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && (strings.EqualFold(f[0], "replicaof") || strings.EqualFold(f[0], "slaveof")) {
			continue
		}
		lines = append(lines, l)
	}
	lines = append(lines, "replicaof "+quote(masterHost)+" "+masterPort)
	return writeConf(path, lines)
}

// quote renders s as a double-quoted Redis config argument. Redis's parser
// (sdssplitargs) understands \" \\ and \xHH inside double quotes.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
