//! A real headless browser for the console test: Debian's chromium driven by chromedriver
//! through the W3C WebDriver protocol (JSON over HTTP), as a person's browser would load pages,
//! fill fields and press buttons. `deploy/test.sh` installs both.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

use crate::{ChildGuard, wait_until};

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it.
pub struct Browser {
    _driver: ChildGuard,
    http: reqwest::Client,
    session: String,
    base: String,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless chromium session.
    pub async fn start(log_dir: &std::path::Path) -> Result<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = ChildGuard::spawn(
            Command::new("chromedriver").arg(format!("--port={port}")),
            log_dir,
            "chromedriver",
        )
        .context("starting chromedriver (deploy/test.sh installs chromium-driver)")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let status = format!("{base}/status");
        wait_until("chromedriver to be ready", Duration::from_secs(30), || {
            let (http, status) = (http.clone(), status.clone());
            async move {
                let Ok(response) = http.get(&status).send().await else {
                    return Ok(false);
                };
                let body: Value = serde_json::from_str(&response.text().await?)?;
                Ok(body["value"]["ready"] == json!(true))
            }
        })
        .await?;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,900"]
            }
        }}});
        let mut browser = Browser {
            _driver: driver,
            http,
            session: String::new(),
            base,
        };
        let created = browser.call("POST", "/session", Some(capabilities)).await?;
        browser.session = created["sessionId"]
            .as_str()
            .context("no session id from chromedriver")?
            .to_owned();
        Ok(browser)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.unwrap_or(json!({})).to_string()),
        };
        let text = request.send().await?.text().await?;
        let answer: Value = serde_json::from_str(&text).with_context(|| text.clone())?;
        if answer["value"]["error"].is_string() {
            bail!("webdriver {method} {path}: {}", answer["value"]);
        }
        Ok(answer["value"].clone())
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn open(&self, url: &str) -> Result<()> {
        self.call("POST", &self.path("/url"), Some(json!({ "url": url })))
            .await?;
        Ok(())
    }

    pub async fn url(&self) -> Result<String> {
        Ok(self
            .call("GET", &self.path("/url"), None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> Result<String> {
        Ok(self
            .call("GET", &self.path("/source"), None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    async fn element(&self, css: &str) -> Result<String> {
        let found = self
            .call(
                "POST",
                &self.path("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .with_context(|| format!("no element {css} on the page"))?;
        Ok(found[ELEMENT]
            .as_str()
            .context("no element reference")?
            .to_owned())
    }

    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let element = self.element(css).await?;
        self.call(
            "POST",
            &self.path(&format!("/element/{element}/value")),
            Some(json!({ "text": text })),
        )
        .await?;
        Ok(())
    }

    /// Waits until the page holds `text` (a click's navigation may still be under way), and
    /// returns the page.
    pub async fn wait_for_text(&self, text: &str) -> Result<String> {
        let page = std::sync::Mutex::new(String::new());
        let found = wait_until(
            &format!("the page to show {text:?}"),
            Duration::from_secs(30),
            || async {
                let source = self.source().await?;
                let shows = source.contains(text);
                *page.lock().expect("page") = source;
                Ok(shows)
            },
        )
        .await;
        let page = page.into_inner().unwrap_or_default();
        found.with_context(|| format!("the page was:\n{page}"))?;
        Ok(page)
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        let element = self.element(css).await?;
        self.call(
            "POST",
            &self.path(&format!("/element/{element}/click")),
            None,
        )
        .await?;
        Ok(())
    }

    /// Ends the session (the browser closes).
    pub async fn close(self) -> Result<()> {
        self.call("DELETE", &self.path(""), None).await?;
        Ok(())
    }
}
