//! The live dashboard (`owsu-jobs serve`, issue 13) in a real headless browser (Chromium from
//! Debian): over a simulated 2021 that went through the real pipeline, each page loads, shows
//! the simulator's figures, renders in Khmer with a Khmer font, and a province's page holds
//! nothing of another province.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use owsu_schemas::Reference;

#[test]
fn the_dashboard_shows_the_year_in_english_and_khmer_and_scopes_by_province() {
    let prefix = owsu_tests::random_prefix("dash");
    owsu_tests::create_topics(&prefix, 3);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let truth = common::simulate_and_publish(&prefix, "2021", "0.005", dir.path());
    assert_eq!(
        common::aggregate(&prefix, Path::new(&p("store"))).unwrap(),
        0
    );

    // The server, as a user starts it, on a free port.
    let addr = owsu_tests::free_addr();
    {
        let (store, addr) = (p("store"), addr.clone());
        std::thread::spawn(move || {
            common::jobs(&[
                "--store",
                &store,
                "serve",
                "--addr",
                &addr,
                "--refresh-s",
                "3600",
            ])
        });
    }
    let start = Instant::now();
    while owsu_tests::http_get(&addr, "/health/ready").is_none_or(|(s, _)| s != 200) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the dashboard did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = |path: &str| format!("http://{addr}{path}");
    let dom = |path: &str| owsu_tests::browse(&url(path), &["--dump-dom"]);

    // The nation: the year's services as the simulator made them, every province.
    let reference = Reference::load(None).unwrap();
    let delivered = truth.provincial.services_delivered + truth.district.services_delivered;
    let nation = dom("/");
    assert!(
        nation.contains(&owsu_jobs::html::thousands(delivered as i64)),
        "national services provided {delivered} on the page"
    );
    assert!(nation.contains("as of 2021-12-31"), "as of the latest day");
    for province in reference.registry.provinces() {
        assert!(
            nation.contains(&format!("/p/{}", province.code)),
            "a tile for {}",
            province.code
        );
    }
    assert!(nation.contains("Reporting completeness"));

    // Khmer: the labels and the provinces' Khmer names.
    let km = dom("/?lang=km");
    assert!(km.contains(r#"lang="km""#));
    assert!(km.contains("ការិយាល័យច្រកចេញចូលតែមួយ"), "the Khmer title");
    assert!(km.contains("សៀមរាប"), "Siem Reap in Khmer");
    assert!(km.contains(&owsu_jobs::html::thousands(delivered as i64)));

    // Siem Reap's page: its units, no other province's.
    let siem_reap = dom("/p/KH-17");
    for u in &reference.registry.units {
        let link = format!("/u/{}\"", u.code);
        if u.province_code == "KH-17" && u.has_owsu {
            assert!(siem_reap.contains(&link), "{} on Siem Reap's page", u.code);
        } else {
            assert!(!siem_reap.contains(&link), "{} on Siem Reap's page", u.code);
        }
    }
    assert!(!siem_reap.contains("Battambang"));
    // In Khmer, every one of its districts by its Khmer name from the registry.
    let siem_reap_km = dom("/p/KH-17?lang=km");
    for u in reference.registry.in_scope("KH-17").filter(|u| u.has_owsu) {
        let km = u
            .name_km
            .as_deref()
            .unwrap_or_else(|| panic!("{} has no Khmer name", u.code));
        assert!(
            siem_reap_km.contains(km),
            "{} ({km}) on Siem Reap's Khmer page",
            u.code
        );
    }
    assert!(siem_reap_km.contains("ស្រុកអង្គរជុំ"), "Angkor Chum in Khmer");
    let unit = dom("/u/KH-1701");
    assert!(unit.contains("Angkor Chum"), "the unit's drill-down");
    assert!(unit.contains("Services provided by type"));
    // Its services by type, named in Khmer on its Khmer page.
    let unit_km = dom("/u/KH-1701?lang=km");
    let named: Vec<&str> = reference
        .catalogue
        .services()
        .filter_map(|(_, s)| s.name_km.as_deref())
        .filter(|km| unit_km.contains(km))
        .collect();
    assert!(
        !named.is_empty(),
        "a service by its Khmer name on the unit's Khmer page"
    );
    assert_eq!(
        owsu_tests::http_get(&addr, "/p/KH-99").map(|r| r.0),
        Some(404)
    );
    assert_eq!(
        owsu_tests::http_get(&addr, "/p/KH-1701").map(|r| r.0),
        Some(404)
    );

    // Screenshots: the pages render (the Khmer one with the Khmer font installed).
    for (path, png) in [("/", "dashboard.png"), ("/?lang=km", "dashboard-km.png")] {
        let file = dir.path().join(png);
        owsu_tests::browse(
            &url(path),
            &[
                "--window-size=1100,1600",
                &format!("--screenshot={}", file.display()),
            ],
        );
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
            "{png} is a rendered page ({} bytes)",
            bytes.len()
        );
        if let Ok(keep) = std::env::var("OWSU_DASHBOARD_SCREENSHOTS") {
            std::fs::copy(&file, Path::new(&keep).join(png)).unwrap();
        }
    }
}
