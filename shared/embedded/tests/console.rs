//! The operator console in a real headless Chromium (through chromedriver and WebDriver)
//! against the running `closeflow` binary: sign in, see the positions grouped by strategy,
//! cancel a close in the dialog (nothing sent), close a position and a strategy leg through
//! the dialog and see them end `closed`, see a broker refusal as the API words it.
//! Screenshots go to `target/console/`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{start_with, Node};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const TOKEN: &str = "console-token";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port (`CHROMEDRIVER`, default `chromedriver` on PATH).
fn chromedriver() -> (Driver, String) {
    let port = common::free_port();
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} did not start ({e}); `make test` installs chromium and chromium-driver"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Driver(child), format!("http://127.0.0.1:{port}"))
}

async fn browser(webdriver: &str) -> Client {
    // The WebDriver client's TLS stack needs a process-wide provider (only loopback HTTP is
    // spoken here); two crypto backends are linked, so name one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,1000",
    ];
    if let Ok(bin) = std::env::var("CHROME") {
        caps.insert("goog:chromeOptions".into(), json!({ "args": args, "binary": bin }));
    } else {
        args.push("--disable-dev-shm-usage");
        caps.insert("goog:chromeOptions".into(), json!({ "args": args }));
    }
    ClientBuilder::rustls()
        .expect("tls")
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("a Chromium session")
}

async fn api(node: &Node, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    common::call(
        &reqwest::Client::new(),
        TOKEN,
        method,
        format!("{}{path}", node.base),
        None,
        body.as_deref(),
    )
    .await
}

async fn register(node: &Node, id: &str, body: Value) {
    let (s, v) = api(node, reqwest::Method::PUT, &format!("/positions/{id}"), Some(body)).await;
    assert_eq!(s, 201, "{v}");
}

async fn status(node: &Node, id: &str) -> String {
    let (_, p) = api(node, reqwest::Method::GET, &format!("/positions/{id}"), None).await;
    p["status"].as_str().unwrap_or_default().to_string()
}

fn screenshots() -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(page: &Client, name: &str) {
    let png = page.screenshot().await.unwrap();
    std::fs::write(screenshots().join(name), png).unwrap();
}

/// Waits until the element's text contains `text`; panics with what it last read.
async fn wait_text(page: &Client, css: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = match page.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if now.contains(text) {
            return;
        }
        assert!(Instant::now() < deadline, "`{css}` never read `{text}`; last: `{now}`");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(page: &Client, css: &str) {
    page.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

fn temp_db() -> String {
    std::env::temp_dir()
        .join(format!("closeflow-console-{}.db", uuid::Uuid::new_v4().simple()))
        .to_string_lossy()
        .into_owned()
}

async fn sign_in(page: &Client, token: &str) {
    page.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    click(page, "#signin-button").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_and_closes_through_the_dialog() {
    let db = temp_db();
    let node = start_with(
        &db,
        &[
            ("API_TOKENS", &format!("ops:{TOKEN}=acct-1")),
            ("SIM_BROKER_SCENARIOS", "TSLA=reject"),
            ("SIM_BROKER_PRICES", "AAPL=187.5"),
        ],
    );
    let option = |symbol: &str, qty: i64, strategy: &str| {
        json!({"account_id": "acct-1", "symbol": symbol, "asset_type": "option", "quantity": qty,
               "avg_entry_price": "1.25", "strategy_id": strategy})
    };
    register(&node, "ic-1-lc", option("AAPL260116C00200000", 1, "ic-1")).await;
    register(&node, "ic-1-sc", option("AAPL260116C00190000", -1, "ic-1")).await;
    register(&node, "ic-1-sp", option("AAPL260116P00170000", -1, "ic-1")).await;
    register(&node, "ic-1-lp", option("AAPL260116P00160000", 1, "ic-1")).await;
    let equity = |symbol: &str| json!({"account_id": "acct-1", "symbol": symbol, "asset_type": "equity", "quantity": "10", "avg_entry_price": "150"});
    register(&node, "ic-2-lc", option("MSFT260116C00400000", 1, "ic-2")).await;
    register(&node, "ic-2-sc", option("MSFT260116C00390000", -1, "ic-2")).await;
    let leg = |symbol: &str, strategy: &str| json!({"account_id": "acct-1", "symbol": symbol, "asset_type": "equity", "quantity": "3", "avg_entry_price": "50", "strategy_id": strategy});
    register(&node, "pair-3-tsla", leg("TSLA", "pair-3")).await;
    register(&node, "pair-3-nvda", leg("NVDA", "pair-3")).await;
    register(&node, "aapl-1", equity("AAPL")).await;
    register(&node, "tsla-1", equity("TSLA")).await;

    let (_driver, webdriver) = chromedriver();
    let page = browser(&webdriver).await;
    page.goto(&format!("{}/console", node.base)).await.unwrap();

    // A wrong token is refused in words.
    sign_in(&page, "not-a-token").await;
    wait_text(&page, "#message", "Sign-in refused").await;

    sign_in(&page, TOKEN).await;
    wait_text(&page, r#"article[data-strategy="ic-1"]"#, "AAPL260116C00200000").await;
    let strategy = page
        .find(Locator::Css(r#"article[data-strategy="ic-1"]"#))
        .await
        .unwrap();
    assert_eq!(
        strategy.find_all(Locator::Css("tbody tr")).await.unwrap().len(),
        4,
        "four legs in one card"
    );
    wait_text(&page, r#"article[data-strategy=""]"#, "TSLA").await;
    shot(&page, "console.png").await;

    // Cancel in the dialog: nothing is sent.
    click(&page, r#"button[data-position="aapl-1"]"#).await;
    wait_text(
        &page,
        "#confirm-text",
        "Close 10 AAPL (aapl-1)? This submits a sell market order.",
    )
    .await;
    shot(&page, "console-dialog.png").await;
    click(&page, "#confirm-cancel").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&node, "aapl-1").await, "open", "cancel sent nothing");

    // Close through the dialog: the button reads Closing... then the row says closed.
    click(&page, r#"button[data-position="aapl-1"]"#).await;
    click(&page, "#confirm-ok").await;
    wait_text(&page, r#"tr[data-position="aapl-1"]"#, "Closed: 10 AAPL filled.").await;
    wait_text(&page, r#"tr[data-position="aapl-1"]"#, "closed").await;
    assert_eq!(status(&node, "aapl-1").await, "closed");

    // Its history: who asked (the token's name), what the pipeline did, oldest first.
    click(&page, r#"button[data-history="aapl-1"]"#).await;
    wait_text(&page, "#history-body", "close_requested").await;
    wait_text(&page, "#history-body", "ops").await;
    wait_text(&page, "#history-body", "closing → closed").await;
    shot(&page, "console-history.png").await;
    click(&page, "#history-close").await;

    // One leg of the iron condor: the dialog warns that short legs stay without the hedge.
    click(&page, r#"button[data-position="ic-1-lc"]"#).await;
    wait_text(
        &page,
        "#confirm-warning",
        "short legs AAPL260116C00190000, AAPL260116P00170000",
    )
    .await;
    // A limit order without a price is refused before anything is sent.
    click(&page, r#"input[name="order_type"][value="limit"]"#).await;
    click(&page, "#confirm-ok").await;
    wait_text(&page, "#confirm-error", "needs a price").await;
    click(&page, r#"input[name="order_type"][value="market"]"#).await;
    click(&page, "#confirm-ok").await;
    wait_text(
        &page,
        r#"tr[data-position="ic-1-lc"]"#,
        "Closed: 1 AAPL260116C00200000 filled.",
    )
    .await;
    assert_eq!(status(&node, "ic-1-sc").await, "open", "only the leg asked for");

    // The broker refuses TSLA: the console says so with the broker's reason.
    click(&page, r#"button[data-position="tsla-1"]"#).await;
    click(&page, "#confirm-ok").await;
    wait_text(&page, r#"tr[data-position="tsla-1"]"#, "Close failed:").await;
    assert_eq!(status(&node, "tsla-1").await, "close_failed");

    // A strategy with a closed leg cannot close as a whole: its button is off.
    let off = page
        .find(Locator::Css(r#"button[data-close-strategy="ic-1"]"#))
        .await
        .unwrap();
    assert!(!off.is_enabled().await.unwrap(), "ic-1 has a closed leg");

    // Close Strategy: the dialog says what closes, Close All closes every leg.
    click(&page, r#"button[data-close-strategy="ic-2"]"#).await;
    wait_text(&page, "#confirm-text", "Close all 2 legs of strategy ic-2?").await;
    wait_text(&page, "#confirm-ok", "Close All").await;
    click(&page, "#confirm-ok").await;
    wait_text(&page, r#"article[data-strategy="ic-2"] header"#, "Closed: 2/2 legs.").await;
    assert_eq!(status(&node, "ic-2-lc").await, "closed");
    assert_eq!(status(&node, "ic-2-sc").await, "closed");

    // One leg refused by the broker: the strategy is partially closed, in words.
    click(&page, r#"button[data-close-strategy="pair-3"]"#).await;
    click(&page, "#confirm-ok").await;
    wait_text(
        &page,
        r#"article[data-strategy="pair-3"] header"#,
        "Partially closed: 1/2 legs.",
    )
    .await;
    assert_eq!(status(&node, "pair-3-nvda").await, "closed");
    assert_eq!(status(&node, "pair-3-tsla").await, "close_failed");
    shot(&page, "console-after.png").await;

    // Narrow screen: still usable (each cell labelled, no horizontal table).
    page.set_window_size(390, 844).await.unwrap();
    shot(&page, "console-narrow.png").await;
    page.close().await.unwrap();
    let _ = std::fs::remove_file(&db);
}

/// Account-wide actions in the browser: Close All follows the bulk close with a progress
/// bar to its end and names the row the broker refused (Retry failed goes again);
/// Liquidate stays disabled until `LIQUIDATE <account>` is typed, then ends flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_closes_all_and_liquidates_an_account() {
    let db = temp_db();
    let node = start_with(
        &db,
        &[
            ("API_TOKENS", &format!("ops:{TOKEN}=acct-b,acct-l")),
            ("SIM_BROKER_SCENARIOS", "TSLA=reject"),
        ],
    );
    let equity = |account: &str, symbol: &str| json!({"account_id": account, "symbol": symbol, "asset_type": "equity", "quantity": "4", "avg_entry_price": "90"});
    for (id, symbol) in [("b-aapl", "AAPL"), ("b-msft", "MSFT"), ("b-tsla", "TSLA")] {
        register(&node, id, equity("acct-b", symbol)).await;
    }
    register(&node, "l-nvda", equity("acct-l", "NVDA")).await;

    let (_driver, webdriver) = chromedriver();
    let page = browser(&webdriver).await;
    page.goto(&format!("{}/console", node.base)).await.unwrap();
    sign_in(&page, TOKEN).await;
    wait_text(&page, r#"section[aria-label="Account acct-b"]"#, "MSFT").await;

    // Cancel sends nothing.
    click(&page, r#"button[data-close-all="acct-b"]"#).await;
    wait_text(
        &page,
        "#bulk-text",
        "Close every open position of account acct-b at market (3 open shown here)?",
    )
    .await;
    click(&page, "#bulk-cancel").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&node, "b-aapl").await, "open", "cancel sent nothing");

    click(&page, r#"button[data-close-all="acct-b"]"#).await;
    click(&page, "#bulk-ok").await;
    wait_text(
        &page,
        r#"div[data-bulk="acct-b"]"#,
        "completed with errors: 3/3 done; 2 closed, 1 failed",
    )
    .await;
    wait_text(&page, r#"div[data-bulk="acct-b"] ul"#, "TSLA (b-tsla)").await;
    shot(&page, "console-close-all.png").await;
    assert_eq!(status(&node, "b-aapl").await, "closed");
    assert_eq!(status(&node, "b-tsla").await, "close_failed");
    click(&page, r#"button[data-retry-failed="acct-b"]"#).await;
    wait_text(&page, r#"div[data-bulk="acct-b"]"#, "1 failed").await;
    assert_eq!(status(&node, "b-tsla").await, "close_failed", "refused again");

    // Liquidate: the button stays off until the phrase is typed in full.
    click(&page, r#"button[data-liquidate="acct-l"]"#).await;
    let ok = page.find(Locator::Id("bulk-ok")).await.unwrap();
    assert!(!ok.is_enabled().await.unwrap());
    let phrase = page.find(Locator::Id("bulk-phrase")).await.unwrap();
    phrase.send_keys("LIQUIDATE acct-").await.unwrap();
    assert!(!ok.is_enabled().await.unwrap(), "half the phrase is not enough");
    phrase.send_keys("l").await.unwrap();
    assert!(ok.is_enabled().await.unwrap());
    shot(&page, "console-liquidate-dialog.png").await;
    click(&page, "#bulk-ok").await;
    wait_text(
        &page,
        r#"div[data-bulk="acct-l"]"#,
        "Flat: the broker holds nothing. Trading is halted.",
    )
    .await;
    assert_eq!(status(&node, "l-nvda").await, "closed");
    shot(&page, "console-liquidated.png").await;
    page.close().await.unwrap();
    let _ = std::fs::remove_file(&db);
}
