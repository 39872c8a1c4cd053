//! The web page in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! against a real server whose containers and instances are `autokill hello` processes.
//!
//! What a user does and sees: launch a service with the Autodestroy switch on and watch its
//! container run, stop it and watch it be terminated without reloading; launch one with the
//! switch off and see it stopped; toggle Autodestroy on the detail page and read the API's
//! answer; spend an instance's budget through the proxy and watch its bar fill and the
//! instance disappear; sign in when a token is configured. Screenshots of every page go to
//! `target/ui-screenshots/` and must not be blank.
//!
//! Needs `chromium` and `chromedriver` on PATH (Debian: `chromium`, `chromium-driver`);
//! skipped loudly without them, and failing instead when `AUTOKILL_TEST_REQUIRE` asks for
//! `chromium` (or `all`, as CI does).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use common::{Server, free_port, hello_runtime, request_with};

/// Longest wait for something to show on the page.
const SHOW: Duration = Duration::from_secs(20);

/// A headless Chromium under chromedriver; both are ended when this is dropped.
struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Chromium and chromedriver, or `None` after a loud skip.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = common::find_or_skip("chromium", "chromium")?;
    let driver = common::find_or_skip("chromedriver", "chromium")?;
    Some((chromium, driver))
}

async fn browser(chromium: &Path, driver: &Path) -> Browser {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let profile = tempfile::tempdir().expect("profile dir");
    // As root on a machine without a network: no sandbox, no GPU, and none of Chromium's own
    // background connections (refused here, and slow to give up on).
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1280,800",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .chain([format!("--user-data-dir={}", profile.path().display())])
    .collect::<Vec<_>>();
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": args },
    });
    let Value::Object(caps) = caps else {
        unreachable!("a JSON object")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://{addr}"))
        .await
        .expect("a WebDriver session");
    let b = Browser {
        client: Some(client),
        driver: child,
        _profile: profile,
    };
    b.viewport(1280, 800).await;
    b
}

impl Browser {
    fn c(&self) -> &Client {
        self.client.as_ref().expect("session")
    }

    async fn goto(&self, url: &str) {
        self.c().goto(url).await.expect("navigate");
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.c()
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// The text of the first element `selector` matches, read fresh each time (rows are
    /// replaced by live updates, so no element handle is kept).
    async fn text(&self, selector: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(selector)],
        )
        .await
        .as_str()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// An attribute of the first element `selector` matches.
    async fn attr(&self, selector: &str, name: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(selector), json!(name)],
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// Waits until `check` holds for what the page shows.
    async fn until(&self, what: &str, mut check: impl AsyncFnMut(&Browser) -> bool) {
        let deadline = Instant::now() + SHOW;
        while !check(self).await {
            if Instant::now() > deadline {
                let page = self.text("main").await.unwrap_or_default();
                panic!("the page did not show: {what}\npage: {page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sizes the window so that the page itself is `width` × `height` (the window's own
    /// frame is added).
    async fn viewport(&self, width: u32, height: u32) {
        let frame = self
            .js(
                "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];",
                vec![],
            )
            .await;
        let extra = |i: usize| frame[i].as_u64().unwrap_or(0) as u32;
        self.c()
            .set_window_size(width + extra(0), height + extra(1))
            .await
            .expect("window size");
    }

    /// Clicks the element `selector` finds. A live update may replace the element between the
    /// find and the click (WebDriver's "stale element"); then it is found again, as a user
    /// would simply click the new one.
    async fn click(&self, selector: &str) {
        let mut tries = 0;
        loop {
            let found = self
                .c()
                .find(Locator::Css(selector))
                .await
                .unwrap_or_else(|e| panic!("find {selector}: {e}"));
            match found.click().await {
                Ok(()) => return,
                Err(e) if tries < 5 && e.to_string().contains("stale element") => tries += 1,
                Err(e) => panic!("click {selector}: {e}"),
            }
        }
    }

    /// Waits until the browser is at `path`.
    async fn at(&self, path: &str) {
        self.until(&format!("the page {path}"), async |b| {
            b.c().current_url().await.is_ok_and(|u| u.path() == path)
        })
        .await;
    }

    /// Sends the login form with the admin token `key`.
    async fn sign_in(&self, key: &str) {
        let field = self
            .c()
            .find(Locator::Css("input[name=key]"))
            .await
            .expect("key field");
        field.send_keys(key).await.expect("type");
        self.click("form[action='/ui/login'] button[type=submit]")
            .await;
    }

    /// Marks the document, to tell later that it was not reloaded (a reload forgets it).
    async fn mark(&self) {
        self.js("window.__autokill_test_mark = true;", vec![]).await;
    }

    async fn still_marked(&self) -> bool {
        self.js("return window.__autokill_test_mark === true;", vec![])
            .await
            .as_bool()
            == Some(true)
    }

    /// Saves a screenshot as `target/ui-screenshots/<name>.png`, failing on a blank one.
    async fn screenshot(&self, name: &str) {
        // Let fonts and a last live update settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.c().screenshot().await.expect("screenshot");
        assert_not_blank(&png, name);
        let dir = screenshots();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), &png).expect("write screenshot");
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

/// `target/ui-screenshots`, beside the build of the binary under test.
fn screenshots() -> PathBuf {
    Path::new(common::BIN)
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("ui-screenshots")
}

/// A page that failed to render is one colour (or nearly): at least 2 % of the pixels must
/// differ from the commonest colour, in at least 8 colours.
fn assert_not_blank(png: &[u8], name: &str) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let bytes = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let mut counts = std::collections::HashMap::new();
    for px in bytes.chunks_exact(step) {
        *counts.entry(px[..3.min(step)].to_vec()).or_insert(0usize) += 1;
    }
    let total = bytes.len() / step;
    let commonest = counts.values().copied().max().unwrap_or(0);
    assert!(
        counts.len() >= 8 && (total - commonest) * 50 >= total,
        "screenshot {name} is blank: {} colours, {} of {total} pixels differ from the commonest",
        counts.len(),
        total - commonest
    );
}

/// A `/api/v1` or `/v1` call from the test itself, answered with `status`.
async fn api(server: &Server, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let r = request_with(server.admin, method, path, text.as_bytes(), &[]).await;
    assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// Fills in the Launch wizard and sends it; the page then shows the new service.
async fn launch(b: &Browser, base: &str, name: &str, autodestroy: bool) -> String {
    b.goto(&format!("{base}/ui/")).await;
    b.until("the wizard enabled", async |b| {
        b.js(
            "return !document.getElementById('launch-fields').disabled;",
            vec![],
        )
        .await
        .as_bool()
            == Some(true)
    })
    .await;
    let name_field = b
        .c()
        .find(Locator::Css("#launch input[name=name]"))
        .await
        .expect("name");
    name_field.send_keys(name).await.expect("type the name");
    let switch = "#launch-autodestroy";
    let on = b
        .js(
            "return document.querySelector(arguments[0]).checked;",
            vec![json!(switch)],
        )
        .await;
    assert_eq!(on, json!(false), "the Autodestroy switch starts off");
    if autodestroy {
        b.click(switch).await;
        let on = b
            .js(
                "return document.querySelector(arguments[0]).checked;",
                vec![json!(switch)],
            )
            .await;
        assert_eq!(on, json!(true));
    }
    b.click("#launch button[type=submit]").await;
    b.until("the new service's page", async |b| {
        b.c()
            .current_url()
            .await
            .is_ok_and(|u| u.path().starts_with("/ui/services/"))
    })
    .await;
    let url = b.c().current_url().await.expect("url");
    url.path().trim_start_matches("/ui/services/").to_owned()
}

/// The state a container row of the service page shows.
async fn container_state(b: &Browser) -> Option<String> {
    b.attr("#containers tr[data-state]", "data-state").await
}

/// Launches `name` through the wizard with the Autodestroy switch as `autodestroy` says,
/// checks what the API was sent, waits for its container to run, presses Stop and waits for
/// the container to show `after` — without the page being reloaded. Returns the service's UUID.
async fn launch_and_stop(
    b: &Browser,
    server: &Server,
    name: &str,
    autodestroy: bool,
    after: &str,
) -> String {
    let base = format!("http://localhost:{}", server.admin.port());
    let id = launch(b, &base, name, autodestroy).await;
    let service = api(server, "GET", &format!("/api/v1/service/{id}/"), None, 200).await;
    let sent = if autodestroy { "ALWAYS" } else { "OFF" };
    assert_eq!(
        service["autodestroy"], sent,
        "the switch sends {sent}: {service}"
    );
    b.until("its container Running", async |b| {
        container_state(b).await.as_deref() == Some("Running")
    })
    .await;
    b.until("the page live", async |b| {
        b.attr("#live", "data-state").await.as_deref() == Some("on")
    })
    .await;
    b.mark().await;
    if autodestroy {
        b.screenshot("service-running").await;
    }
    b.click("button[data-call$='/stop/']").await;
    b.until(&format!("its container {after}"), async |b| {
        container_state(b).await.as_deref() == Some(after)
    })
    .await;
    assert!(b.still_marked().await, "the page changed without a reload");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_launches_stops_toggles_and_watches_budgets() {
    let Some((chromium, driver)) = tools() else {
        return;
    };
    let server = Server::start(|dir| hello_runtime(dir, "")).await;
    let base = format!("http://localhost:{}", server.admin.port());
    let b = browser(&chromium, &driver).await;

    // Autodestroy on: the container runs, and once stopped it is terminated, live.
    let once = launch_and_stop(&b, &server, "once", true, "Terminated").await;
    b.screenshot("service-terminated").await;
    let gone = api(
        &server,
        "GET",
        &format!("/api/v1/container/?service={once}"),
        None,
        200,
    )
    .await;
    assert_eq!(gone["objects"][0]["state"], "Terminated", "{gone}");
    // Autodestroy off: stopped, it stays Stopped.
    let keep = launch_and_stop(&b, &server, "keep", false, "Stopped").await;
    b.until("exit code 0 shown", async |b| {
        b.text("#containers td[data-label='Exit code']")
            .await
            .is_some_and(|t| t.starts_with('0'))
    })
    .await;

    // --- The Autodestroy button toggles ALWAYS / OFF through PATCH, shown at once. ---
    assert_eq!(
        b.attr("#autodestroy", "aria-pressed").await.as_deref(),
        Some("false")
    );
    for want in ["ALWAYS", "OFF"] {
        b.click("#autodestroy").await;
        b.until(&format!("the button saying {want}"), async |b| {
            b.text("#autodestroy .val").await.as_deref() == Some(want)
        })
        .await;
        let s = api(
            &server,
            "GET",
            &format!("/api/v1/service/{keep}/"),
            None,
            200,
        )
        .await;
        assert_eq!(s["autodestroy"], want, "{s}");
        assert_eq!(
            b.attr("#autodestroy", "aria-pressed").await.as_deref(),
            Some(if want == "OFF" { "false" } else { "true" })
        );
    }
    b.screenshot("service-detail").await;
    b.viewport(390, 844).await;
    b.screenshot("service-detail-phone").await;
    b.viewport(1280, 800).await;

    // The services page lists both, with their policies.
    b.goto(&format!("{base}/ui/")).await;
    let row = |id: &str| format!("#s-{id}");
    assert!(
        b.text(&row(&once))
            .await
            .is_some_and(|t| t.contains("ALWAYS"))
    );
    assert!(
        b.text(&row(&keep))
            .await
            .is_some_and(|t| t.contains("Stopped"))
    );
    b.screenshot("services").await;
    b.viewport(390, 844).await;
    b.screenshot("services-phone").await;
    b.c()
        .set_window_size(1280, 800)
        .await
        .expect("desktop width");

    // --- Instances: a budget bar fills as requests go through the proxy. ---
    api(
        &server,
        "POST",
        "/v1/instances",
        Some(json!({"name": "base", "image": "hello"})),
        200,
    )
    .await;
    api(
        &server,
        "POST",
        "/v1/instances/templates",
        Some(json!({"name": "base", "autokill": {"time_ms": 3_600_000}})),
        200,
    )
    .await;
    api(
        &server,
        "POST",
        "/v1/instances",
        Some(json!({"name": "waiting", "image": "hello", "autokill": {"time_ms": 3_600_000}})),
        200,
    )
    .await;
    b.goto(&format!("{base}/ui/instances")).await;
    b.until("the page live", async |b| {
        b.attr("#live", "data-state").await.as_deref() == Some("on")
    })
    .await;
    b.mark().await;
    let created = api(
        &server,
        "POST",
        "/v1/instances",
        Some(
            json!({"name": "budget", "image": "hello", "autostart": true, "timeout_s": 10,
                    "autokill": {"num_requests": 5}}),
        ),
        200,
    )
    .await;
    let id = created["data"]["instances"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    let row = format!("#i-{id}");
    b.until("the new instance running", async |b| {
        b.attr(&row, "data-state").await.as_deref() == Some("running")
    })
    .await;
    let bar = format!("{row} progress");
    assert_eq!(b.attr(&bar, "max").await.as_deref(), Some("5"));
    for n in 1..=3 {
        assert_eq!(server.get("budget.localhost", "/").await.status, 200);
        b.until(&format!("the bar at {n} of 5"), async |b| {
            b.attr(&bar, "value").await.as_deref() == Some(n.to_string().as_str())
        })
        .await;
    }
    // Locked, the instance serves past its budget and stays: the bar is seen full.
    b.click(&format!("#lock-i-{id}")).await;
    b.until("the lock on", async |b| {
        b.attr(&format!("#lock-i-{id}"), "aria-checked")
            .await
            .as_deref()
            == Some("true")
    })
    .await;
    let locked = api(&server, "GET", &format!("/v1/instances/{id}"), None, 200).await;
    assert_eq!(
        locked["data"]["instances"][0]["delete_lock"], true,
        "{locked}"
    );
    for _ in 0..2 {
        assert_eq!(server.get("budget.localhost", "/").await.status, 200);
    }
    b.until("the bar full at 5 of 5", async |b| {
        b.attr(&bar, "value").await.as_deref() == Some("5")
            && b.attr(&bar, "class").await.as_deref() == Some("full")
    })
    .await;
    assert!(
        b.text(&row)
            .await
            .is_some_and(|t| t.contains("held by delete lock"))
    );
    // The countdowns of armed timers: the stopped instance and the template.
    let waiting = b
        .text("tr[data-name=waiting] .due")
        .await
        .unwrap_or_default();
    assert!(
        waiting.starts_with("deleted (stopped time) in 59m") || waiting.contains("in 1h"),
        "{waiting}"
    );
    let template = b.text("#templates .due").await.unwrap_or_default();
    assert!(template.starts_with("deleted (unused) in"), "{template}");
    b.screenshot("instances").await;
    b.viewport(390, 844).await;
    b.screenshot("instances-phone").await;
    b.c()
        .set_window_size(1280, 800)
        .await
        .expect("desktop width");
    // Unlocked, the spent budget kills it at once: the row goes.
    b.click(&format!("#lock-i-{id}")).await;
    b.until("the instance gone", async |b| b.text(&row).await.is_none())
        .await;
    assert!(b.still_marked().await, "the page changed without a reload");
    b.until("the kill counted", async |b| {
        b.text("#kills")
            .await
            .is_some_and(|t| t.contains("num_requests instance 1"))
    })
    .await;
    let gone = api(&server, "GET", &format!("/v1/instances/{id}"), None, 404).await;
    assert_eq!(gone["status"], "error");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_the_token_and_keeps_it_in_an_httponly_cookie() {
    let Some((chromium, driver)) = tools() else {
        return;
    };
    let server =
        Server::start_with_admin(|dir| hello_runtime(dir, ""), "  token: s3cret-t0ken\n").await;
    let base = format!("http://localhost:{}", server.admin.port());
    let b = browser(&chromium, &driver).await;
    b.goto(&format!("{base}/ui/instances")).await;
    b.at("/ui/login").await;
    b.screenshot("login").await;
    b.sign_in("wrong").await;
    b.until("the refusal", async |b| {
        b.text("p.error")
            .await
            .is_some_and(|t| t.contains("not accepted"))
    })
    .await;
    b.sign_in("s3cret-t0ken").await;
    b.at("/ui/instances").await;
    let cookie = b.js("return document.cookie;", vec![]).await;
    assert_eq!(
        cookie,
        json!(""),
        "the credential is out of the script's reach"
    );
    b.until("the page live", async |b| {
        b.attr("#live", "data-state").await.as_deref() == Some("on")
    })
    .await;
    // A mutating call from the page passes the guard and the token check.
    api(
        &server,
        "POST",
        "/v1/instances",
        Some(json!({"name": "x"})),
        401,
    )
    .await;
    let r = request_with(
        server.admin,
        "POST",
        "/v1/instances",
        br#"{"name": "locked", "image": "hello"}"#,
        &[("authorization", "Bearer s3cret-t0ken")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    b.until("the new instance", async |b| {
        b.text("tr[data-name=locked]").await.is_some()
    })
    .await;
    b.click("tr[data-name=locked] button[role=switch]").await;
    b.until("the lock on", async |b| {
        b.attr("tr[data-name=locked] button[role=switch]", "aria-checked")
            .await
            .as_deref()
            == Some("true")
    })
    .await;
    // Signed out, the page asks again.
    b.click("form.signout button").await;
    b.at("/ui/login").await;
    b.goto(&format!("{base}/ui/")).await;
    assert!(
        b.c()
            .current_url()
            .await
            .is_ok_and(|u| u.path() == "/ui/login")
    );
    b.close().await;
}

/// The median of `xs` (sorted in place).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Figures for the README, not a check: the weight of the instances page with 1,000 instances
/// and the time to its first render in Chromium. Run against the release build:
/// `AUTOKILL_TEST_BIN=target/release/autokill cargo test --release --test ui_browser -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement that prints figures; run by hand"]
async fn figures_instances_page_with_1000_instances() {
    let Some((chromium, driver)) = tools() else {
        return;
    };
    let server = Server::start(|dir| hello_runtime(dir, "")).await;
    let items: Vec<Value> = (0..1000)
        .map(|n| {
            json!({"name": format!("load-{n:04}"), "image": "hello",
                   "autokill": {"num_requests": 100, "time_ms": 3_600_000}})
        })
        .collect();
    api(
        &server,
        "POST",
        "/v1/instances",
        Some(Value::Array(items)),
        200,
    )
    .await;
    let size = |path: &'static str| {
        let admin = server.admin;
        async move {
            let r = common::request(admin, "GET", "localhost", path).await;
            assert_eq!(r.status, 200, "{path}");
            r.body.len()
        }
    };
    let (html, js, css) = (
        size("/ui/instances").await,
        size("/ui/assets/ui.js").await,
        size("/ui/assets/ui.css").await,
    );
    let base = format!("http://localhost:{}", server.admin.port());
    let b = browser(&chromium, &driver).await;
    let (mut fcp, mut dcl, mut response) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..8 {
        b.goto(&format!("{base}/ui/instances")).await;
        b.until("the first paint", async |b| {
            b.js(
                "return performance.getEntriesByName('first-contentful-paint').length;",
                vec![],
            )
            .await
            .as_u64()
                == Some(1)
        })
        .await;
        let t = b
            .js(
                "const n = performance.getEntriesByType('navigation')[0];
                 const p = performance.getEntriesByName('first-contentful-paint')[0];
                 return [p.startTime, n.domContentLoadedEventEnd, n.responseEnd];",
                vec![],
            )
            .await;
        let at = |i: usize| t[i].as_f64().unwrap_or(f64::NAN);
        println!(
            "load {round}: first contentful paint {:.0} ms, DOMContentLoaded {:.0} ms, response end {:.0} ms",
            at(0),
            at(1),
            at(2)
        );
        // The first load fetches the script and the style sheet; later ones have them cached.
        if round > 0 {
            fcp.push(at(0));
            dcl.push(at(1));
            response.push(at(2));
        }
    }
    let rows = b
        .js(
            "return document.querySelectorAll('#instances tr').length;",
            vec![],
        )
        .await;
    assert_eq!(rows, json!(1000));
    println!(
        "instances page, 1,000 instances: HTML {html} B, script {js} B, style {css} B, total {} B",
        html + js + css
    );
    println!(
        "medians of {} warm loads: first contentful paint {:.0} ms, DOMContentLoaded {:.0} ms, response end {:.0} ms",
        fcp.len(),
        median(&mut fcp),
        median(&mut dcl),
        median(&mut response)
    );
    b.close().await;
}
