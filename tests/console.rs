//! The admin console in a real headless browser (chromium through chromedriver): signing in
//! with the token, the sites page, a parked row the test made with what it waits for, and a
//! conflict the test made, shown side by side and resolved from the page, which changes HQ.
//! Without the session, pages send the browser to sign in, and a form without the session's
//! anti-forgery field changes nothing.

use anyhow::{Context, Result, ensure};
use mysql_async::prelude::*;
use tributary_suite::pipeline::{Pipeline, PipelineOptions};
use tributary_suite::webdriver::Browser;

const TOKEN: &str = "console-test-token-0123456789";
/// A person HQ never receives: a name of theirs parks.
const ABSENT: &str = "c0501e00-0000-4000-8000-000000000001";
const ABSENT_NAME: &str = "c0501e00-0000-4000-8000-0000000000a1";
/// A person both sides edit: a conflict.
const SHARED: &str = "c0501e00-0000-4000-8000-000000000002";
const SHARED_NAME: &str = "c0501e00-0000-4000-8000-0000000000a2";
const HQ_GIVEN: &str = "Akinyi-HQ";
const SITE_FAMILY: &str = "Ochieng-Site";
/// A second person both sides edit, whose conflict is merged column by column.
const MERGED: &str = "c0501e00-0000-4000-8000-000000000003";
const MERGED_NAME: &str = "c0501e00-0000-4000-8000-0000000000a3";
const SITE_MIDDLE: &str = "Auma-Site";
const SERVING: &str = "serving the admin console on http://";

async fn insert_person(site: &mut mysql_async::Conn, person: &str) -> Result<()> {
    site.exec_drop(
        "INSERT INTO person (gender, creator, date_created, voided, uuid)
         VALUES ('F', 1, '2024-01-01 00:00:00', 0, ?)",
        (person,),
    )
    .await?;
    Ok(())
}

async fn insert_name(site: &mut mysql_async::Conn, person: &str, name: &str) -> Result<()> {
    site.exec_drop(
        "INSERT INTO person_name (preferred, person_id, given_name, family_name, creator,
                                  date_created, voided, uuid)
         SELECT 1, person_id, 'Akinyi', 'Otieno', 1, '2024-01-01 00:00:00', 0, ?
         FROM person WHERE uuid = ?",
        (name, person),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_parked_rows_and_resolves_a_conflict_in_a_browser() -> Result<()> {
    let p = Pipeline::start("console", PipelineOptions::default()).await?;
    let token_file = p.work.join("console.token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        format!(
            "{config}\n[hq.console]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
    )?;
    // A person at the site before capture starts: HQ never gets them, their new name parks.
    let mut site = p.site.conn().await?;
    insert_person(&mut site, ABSENT).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    insert_name(&mut site, ABSENT, ABSENT_NAME).await?;
    insert_person(&mut site, SHARED).await?;
    insert_name(&mut site, SHARED, SHARED_NAME).await?;
    insert_person(&mut site, MERGED).await?;
    insert_name(&mut site, MERGED, MERGED_NAME).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    // HQ corrects the shared name; then the clinic changes it too: a conflict.
    let mut hq = p.hq.conn().await?;
    hq.exec_drop(
        "UPDATE person_name SET given_name = ? WHERE uuid = ?",
        (HQ_GIVEN, SHARED_NAME),
    )
    .await?;
    site.exec_drop(
        "UPDATE person_name SET family_name = ? WHERE uuid = ?",
        (SITE_FAMILY, SHARED_NAME),
    )
    .await?;
    // The second: HQ corrects the given name, the clinic the family and middle names.
    hq.exec_drop(
        "UPDATE person_name SET given_name = ? WHERE uuid = ?",
        (HQ_GIVEN, MERGED_NAME),
    )
    .await?;
    site.exec_drop(
        "UPDATE person_name SET family_name = ?, middle_name = ? WHERE uuid = ?",
        (SITE_FAMILY, SITE_MIDDLE, MERGED_NAME),
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let conflict_of = |name: &str| {
        format!(
            "SELECT conflict_id FROM tributary_conflict WHERE status = 'open' AND identity = '{name}'"
        )
    };
    let conflict: u64 =
        p.hq.scalar(&conflict_of(SHARED_NAME))
            .await
            .with_context(|| p.status().unwrap_or_default())?;
    let merged: u64 = p.hq.scalar(&conflict_of(MERGED_NAME)).await?;

    let console = {
        let logs = apply.stderr();
        let start = logs
            .find(SERVING)
            .context("the console's address in the log")?
            + SERVING.len();
        let rest = &logs[start..];
        format!("http://{}", &rest[..rest.find('/').context("address")?])
    };

    // Without a session, the browser is sent to sign in; a wrong token is refused.
    let browser = Browser::start(&p.work.join("logs")).await?;
    let result = async {
        browser.open(&format!("{console}/parked")).await?;
        let url = browser.url().await?;
        ensure!(url.ends_with("/login"), "{url}");
        browser
            .type_into("input[name=token]", "not-the-token-at-all")
            .await?;
        browser.click("#sign-in").await?;
        browser.wait_for_text("not the console").await?;
        browser.type_into("input[name=token]", TOKEN).await?;
        browser.click("#sign-in").await?;
        let sites = browser.wait_for_text("<h1>Sites</h1>").await?;
        ensure!(
            sites.contains(&p.site_id) && sites.contains("streaming"),
            "{sites}"
        );

        // The parked name, with what it waits for and from which site.
        browser.open(&format!("{console}/parked")).await?;
        let parked = browser.source().await?;
        ensure!(parked.contains(ABSENT_NAME), "{parked}");
        ensure!(
            parked.contains(&format!("waiting for person {}", &ABSENT[..8])),
            "{parked}"
        );

        // The conflict: both versions side by side, then the site's version taken.
        browser.open(&format!("{console}/conflicts")).await?;
        browser.click(&format!("#conflict-{conflict}")).await?;
        let shown = browser.wait_for_text("id=\"versions\"").await?;
        ensure!(
            shown.contains(HQ_GIVEN) && shown.contains(SITE_FAMILY),
            "{shown}"
        );
        browser.click("#take-site").await?;
        browser.wait_for_text("is resolved").await?;

        // The second, merged: the site's family name only; HQ keeps the rest.
        browser
            .open(&format!("{console}/conflicts/{merged}"))
            .await?;
        browser.wait_for_text("id=\"versions\"").await?;
        browser.click("#merge").await?;
        browser.wait_for_text("tick at least one column").await?;
        browser.click("#take-family_name").await?;
        browser.click("#merge").await?;
        browser.wait_for_text("is resolved").await?;
        Ok(())
    }
    .await;
    browser.close().await.ok();
    result.map_err(|e| e.context(apply.logs()))?;

    let resolution: String =
        p.hq.scalar(&format!(
            "SELECT resolution FROM tributary_conflict WHERE conflict_id = {conflict}"
        ))
        .await?;
    assert_eq!(resolution, "take-site");
    let family: String =
        p.hq.scalar(&format!(
            "SELECT family_name FROM person_name WHERE uuid = '{SHARED_NAME}'"
        ))
        .await?;
    assert_eq!(family, SITE_FAMILY, "the site's version is at HQ");
    let (resolution, columns): (String, String) = {
        let mut hq = p.hq.conn().await?;
        hq.query_first(format!(
            "SELECT resolution, merged_columns FROM tributary_conflict WHERE conflict_id = {merged}"
        ))
        .await?
        .context("the merged conflict")?
    };
    assert_eq!(
        (resolution.as_str(), columns.as_str()),
        ("merge", "family_name")
    );
    let (given, family, middle): (String, String, Option<String>) = {
        let mut hq = p.hq.conn().await?;
        hq.query_first(format!(
            "SELECT given_name, family_name, middle_name FROM person_name WHERE uuid = '{MERGED_NAME}'"
        ))
        .await?
        .context("the merged name")?
    };
    assert_eq!(
        (given.as_str(), family.as_str()),
        (HQ_GIVEN, SITE_FAMILY),
        "HQ's given name kept, the site's family name taken"
    );
    assert_ne!(
        middle.as_deref(),
        Some(SITE_MIDDLE),
        "the unticked column stays HQ's"
    );

    // A form posted without the session's anti-forgery field changes nothing, even with the
    // token as a bearer; without any credential the console sends to the sign-in page.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let parked_id: u64 =
        p.hq.scalar("SELECT parked_id FROM tributary_parked_row LIMIT 1")
            .await?;
    let forged = http
        .post(format!("{console}/parked/{parked_id}/drop"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=guess&reason=forged")
        .send()
        .await?;
    assert_eq!(forged.status(), 403);
    let anonymous = http.get(format!("{console}/")).send().await?;
    assert!(anonymous.status().is_redirection());
    let still: u64 =
        p.hq.scalar(&format!(
            "SELECT COUNT(*) FROM tributary_parked_row WHERE parked_id = {parked_id}"
        ))
        .await?;
    assert_eq!(still, 1, "the forged drop changed nothing");
    Ok(())
}
