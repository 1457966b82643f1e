package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
)

// findChromium returns the path of a Chromium or Chrome binary. Without
// one the test is skipped, unless SESSIOND_REQUIRE_CHROMIUM is set (CI sets
// it once it has installed chromium), in which case it fails.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SESSIOND_REQUIRE_CHROMIUM") != "" {
		t.Fatal("chromium not found in PATH: install it (apt-get install chromium)")
	}
	t.Skip("chromium not found in PATH: install it (apt-get install chromium) to run the headless UI check")
	return ""
}

// artifactsDir is where the browser check leaves its screenshot:
// $SESSIOND_ARTIFACTS when set (CI keeps it), else the test's temporary
// directory.
func artifactsDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("SESSIOND_ARTIFACTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

// TestUIInBrowser loads the Asynq web UI in headless Chromium, behind basic
// auth, waits until the queue list shows every queue, saves a screenshot
// and checks the page's text.
func TestUIInBrowser(t *testing.T) {
	t.Parallel()
	chromium := findChromium(t)
	const user, password = "ops", "ui-browser-password"
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	d := startDaemon(t, nil, map[string]string{
		"SESSIOND_UI_USER":                user,
		"SESSIOND_UI_PASSWORD":            password,
		"SESSIOND_WEBHOOK_URL":            receiver.URL,
		"SESSIOND_WEBHOOK_SECRET":         "whsec_" + base64.StdEncoding.EncodeToString([]byte("ui-browser-webhook-key-0123456789")),
		"SESSIOND_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
	})

	// Sessions give the scheduler (expiry) and the dispatcher (webhooks)
	// work, so their queues exist; wait until a webhook went out. Should no
	// queue exist all the same, a probe queue stands in.
	var lastID string
	for i := range 3 {
		lastID, _ = d.createSession(fmt.Sprintf("ui-user-%d", i), map[string]string{"first_name": "Ui"})
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := d.call(http.MethodGet, "/v1/sessions/"+lastID+"/deliveries", lastID, nil)
		if strings.Contains(string(body), `"attempt":1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("no webhook attempt within 15s (%s); going on", body)
			break
		}
		time.Sleep(20 * time.Millisecond) // polling the API, with a deadline
	}
	rdb := d.Redis.Client()
	queues, err := asynq.NewInspectorFromRedisClient(rdb).Queues()
	if err != nil {
		t.Fatalf("list queues: %v", err)
	}
	if len(queues) == 0 {
		t.Log("no Asynq queue after creating sessions (scheduler/dispatcher not wired yet?): enqueuing into queue ui-check")
		client := asynq.NewClientFromRedisClient(rdb)
		for _, opt := range []asynq.Option{asynq.ProcessIn(time.Hour), asynq.ProcessIn(2 * time.Hour)} {
			if _, err := client.Enqueue(asynq.NewTask("ui:check", nil), asynq.Queue("ui-check"), opt); err != nil {
				t.Fatalf("enqueue: %v", err)
			}
		}
		queues = []string{"ui-check"}
	}
	slices.Sort(queues)

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()

	// The first action starts the browser; it must not carry a timeout.
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": auth},
		})
		return err
	})); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	tctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()

	if err := chromedp.Do(tctx, chromedp.Navigate(d.URL+"/ui/")); err != nil {
		t.Fatalf("open /ui/: %v", err)
	}
	names, _ := json.Marshal(queues)
	// The dashboard lists the queues in a table once its API call returns.
	waitJS := fmt.Sprintf(`(() => {
		const t = document.querySelector("table");
		return !!t && %s.every(q => t.innerText.includes(q));
	})()`, names)
	_, waitErr := chromedp.Run(tctx, chromedp.Poll[bool](waitJS))

	png, err := chromedp.Run(tctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(artifactsDir(t), "ui-queues.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of /ui/: %s", shot)

	text, err := chromedp.Run(tctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatalf("read page text: %v", err)
	}
	if waitErr != nil {
		t.Fatalf("queue list with %v did not render: %v\npage text:\n%s", queues, waitErr, text)
	}
	for _, q := range queues {
		if !strings.Contains(text, q) {
			t.Errorf("page text lacks queue %q:\n%s", q, text)
		}
	}
	if !strings.Contains(text, "Queues") {
		t.Errorf("page text lacks the Queues heading:\n%s", text)
	}
}
