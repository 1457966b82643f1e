// Command sessionctl is the command-line client of sessiond's admin API:
// every /v1 route is a command, and "sessionctl api" sends any request. It
// signs each request (scheme v2) through package client with the
// credentials in SESSIOND_API_KEY and SESSIOND_API_SECRET, sends it to
// SESSIOND_URL (default http://127.0.0.1:8080) and prints the answer.
//
//	sessionctl sessions create --ref-id user-42 --person @person.json
//	sessionctl sessions decide 6f1c… approved --reason "documents match"
//	sessionctl events --follow
//	echo "$TOKEN" | sessionctl tokens introspect -
//	sessionctl api GET '/v1/sessions?status=review'
//
// Invariants:
//
//   - stdout carries only the daemon's JSON answers, as received: the
//     answer of a 2xx (exit 0), the error body of any other status (exit
//     1); events --follow prints one event per line until interrupted
//     (exit 0).
//   - stderr carries one line per failure; a usage error (exit 2) adds the
//     command's usage. --help, at every level, prints usage on stdout.
//   - Arguments are checked before any request is sent or any credential
//     is read; a missing credential is exit 2 and sends nothing.
//   - Values that should stay out of the process list (a token, personal
//     data, a body) can come from stdin ("-") or a file ("@path"); sessionctl
//     never prints the secret, a token it was given, or a signature.
//   - main only calls run(ctx, args, getenv, stdin, stdout, stderr); there
//     is no package-level state, so tests call run directly, in parallel.
package main
