//! Module tables use types OpenMRS core does not: every family must reach HQ value for value
//! (compared by `tributary verify` through both databases, and spot-checked at HQ): signed and
//! unsigned TINYINT..BIGINT at their limits, DECIMAL(65,30), BIT(1) and BIT(64), YEAR,
//! DATETIME(6), TIMESTAMP(3) written from another time zone, negative TIME(1), TIME(2) and
//! TIME(3) with fractions, YEAR 0000, zero dates, utf8mb3 and latin1 text,
//! BINARY/VARBINARY/BLOB, ENUM, SET, JSON and GEOMETRY. (mysql_common's generic decoder gets
//! negative TIME(1)/TIME(2) fractions and YEAR 0000 wrong; the prepared codecs do not.)

use anyhow::Result;
use mysql_async::prelude::*;
use tributary_suite::pipeline::{Pipeline, PipelineOptions, run_ok};

const DDL: &str = "CREATE TABLE demo_types_ext (
    id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    uuid CHAR(38) NOT NULL UNIQUE,
    tiny_s TINYINT NULL, tiny_u TINYINT UNSIGNED NULL,
    small_u SMALLINT UNSIGNED NULL, medium_s MEDIUMINT NULL, int_u INT UNSIGNED NULL,
    big_s BIGINT NULL, big_u BIGINT UNSIGNED NULL,
    dec_wide DECIMAL(65,30) NULL, dec_money DECIMAL(10,2) NULL,
    bits1 BIT(1) NULL, bits64 BIT(64) NULL,
    yr YEAR NULL,
    dt6 DATETIME(6) NULL, ts3 TIMESTAMP(3) NULL DEFAULT NULL, t_long TIME(3) NULL,
    t_tenths TIME(1) NULL, t_hundredths TIME(2) NULL, yr_zero YEAR NULL,
    zero_date DATE NULL, zero_dt DATETIME NULL,
    name_mb3 VARCHAR(50) CHARACTER SET utf8mb3 NULL,
    name_latin1 VARCHAR(50) CHARACTER SET latin1 NULL,
    bin16 BINARY(16) NULL, varbin VARBINARY(20) NULL, blob_col BLOB NULL,
    en ENUM('draft', 'final', 'amended') NULL,
    st SET('a', 'b', 'c', 'd') NULL,
    js JSON NULL,
    geo GEOMETRY NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_module_type_family_round_trips_exactly() -> Result<()> {
    let p = Pipeline::start("module-types", PipelineOptions::default()).await?;
    for db in [&p.site, &p.hq] {
        db.exec("SET GLOBAL sql_mode = ''").await?; // zero dates are legal in old module data
    }
    p.site.exec(DDL).await?;
    // HQ runs a module version that lists the ENUM's members in another order: values must
    // travel by name, not by position. (A SET in another order would hold the same members
    // but print them in another order, which `verify` compares as text.)
    let reordered = DDL.replace(
        "ENUM('draft', 'final', 'amended')",
        "ENUM('amended', 'final', 'draft')",
    );
    p.hq.exec(&reordered).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let mut site = p.site.conn().await?;
    site.query_drop("SET time_zone = '-05:00'").await?;
    site.query_drop(
        "INSERT INTO demo_types_ext (uuid, tiny_s, tiny_u, small_u, medium_s, int_u, big_s, big_u, dec_wide, dec_money,
            bits1, bits64, yr, dt6, ts3, t_long, t_tenths, t_hundredths, yr_zero, zero_date, zero_dt, name_mb3, name_latin1, bin16, varbin, blob_col, en, st, js, geo)
         VALUES ('f0000000-0000-4000-8000-000000000001', -128, 255, 65535, -8388608, 4294967295,
            -9223372036854775808, 18446744073709551615,
            -12345678901234567890123456789012345.123456789012345678901234567890, 99999999.99,
            b'1', b'1000000000000000000000000000000000000000000000000000000000000001', 2155,
            '2024-02-29 23:59:59.123456', '2024-06-01 12:00:00.250', '-838:59:58.990', '-00:00:01.1', '-12:30:00.01', 0,
            '0000-00-00', '0000-00-00 00:00:00', 'Zoë Ñandú', 'Müller-Lüdenscheid', UNHEX('00FF00FF00FF00FF00FF00FF00FF00FF'),
            UNHEX('DEADBEEF00'), UNHEX('000102030405FEFF'), 'amended', 'a,c,d', '{\"k\": [1, 2.5, \"x\"], \"n\": null}', ST_GeomFromText('POINT(36.8 -1.28)'))",
    )
    .await?;
    site.query_drop(
        "INSERT INTO demo_types_ext (uuid) VALUES ('f0000000-0000-4000-8000-000000000002')",
    )
    .await?;
    site.query_drop("UPDATE demo_types_ext SET en = 'draft', st = '', bits1 = b'0' WHERE uuid = 'f0000000-0000-4000-8000-000000000002'").await?;

    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let report = run_ok(p.run(&["verify", "--tables", "demo_types_ext"])?)?;
    assert!(
        report.contains("demo_types_ext") && report.contains(" ok"),
        "{report}\n{}",
        p.status()?
    );
    let mut hq = p.hq.conn().await?;
    let row: Option<(String, String, String, String)> = hq
        .query_first(
            "SELECT CAST(big_u AS CHAR), CAST(dec_wide AS CHAR), HEX(bits64), CONCAT(en, '|', st, '|', name_latin1)
             FROM demo_types_ext WHERE uuid = 'f0000000-0000-4000-8000-000000000001'",
        )
        .await?;
    assert_eq!(
        row,
        Some((
            "18446744073709551615".to_owned(),
            "-12345678901234567890123456789012345.123456789012345678901234567890".to_owned(),
            "8000000000000001".to_owned(),
            "amended|a,c,d|Müller-Lüdenscheid".to_owned()
        ))
    );
    let times: Option<(String, String, String)> = hq
        .query_first(
            "SELECT CAST(t_tenths AS CHAR), CAST(t_hundredths AS CHAR), CAST(yr_zero AS CHAR)
             FROM demo_types_ext WHERE uuid = 'f0000000-0000-4000-8000-000000000001'",
        )
        .await?;
    assert_eq!(
        times,
        Some((
            "-00:00:01.1".to_owned(),
            "-12:30:00.01".to_owned(),
            "0000".to_owned()
        ))
    );
    Ok(())
}
