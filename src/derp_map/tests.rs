//! DERP maps in Tailscale's JSON and Headscale's YAML, merged as Headscale merges them, and
//! fetched over HTTP from a local server standing in for Tailscale's.

use std::io::{Read, Write};
use std::net::TcpListener;

use super::*;

/// Tailscale's form, as `https://controlplane.tailscale.com/derpmap/default` serves it.
const TAILSCALE_JSON: &str = r#"{"Regions": {
  "1": {"RegionID": 1, "RegionCode": "nyc", "RegionName": "New York City",
        "Nodes": [{"Name": "1f", "RegionID": 1, "HostName": "derp1f.tailscale.com", "IPv4": "199.38.181.104",
                   "IPv6": "2607:f740:f::bc", "CanPort80": true}]},
  "2": {"RegionID": 2, "RegionCode": "sfo", "RegionName": "San Francisco",
        "Nodes": [{"Name": "2d", "RegionID": 2, "HostName": "derp2d.tailscale.com", "STUNOnly": false}]}
}}"#;

/// Headscale's `derp-example.yaml` form: region 1 removed, 900 added.
const HEADSCALE_YAML: &str = "
regions:
  1: null
  900:
    regionid: 900
    regioncode: custom
    regionname: My Region
    nodes:
      - name: 900a
        regionid: 900
        hostname: myderp.example.com
        ipv4: 123.123.123.123
        ipv6: \"2604:a880:400:d1::828:b001\"
        stunport: 0
        stunonly: false
        derpport: 0
";

fn embedded() -> DerpRegion {
    DerpRegion { region_id: 999, region_code: "headscale".into(), region_name: "Embedded".into(), nodes: Vec::new() }
}

#[test]
fn both_forms_parse() {
    let json = parse(TAILSCALE_JSON).unwrap();
    let nyc = json[&1].as_ref().unwrap();
    assert_eq!((nyc.region_code.as_str(), nyc.nodes[0].host_name.as_str()), ("nyc", "derp1f.tailscale.com"));
    assert!(nyc.nodes[0].can_port_80 && nyc.nodes[0].ipv6 == "2607:f740:f::bc");
    let yaml = parse(HEADSCALE_YAML).unwrap();
    assert_eq!(yaml[&1], None, "null removes a region");
    assert_eq!(yaml[&900].as_ref().unwrap().nodes[0].ipv4, "123.123.123.123");
}

#[test]
fn later_maps_override_null_removes_and_the_embedded_region_is_on_top() {
    let mut ours = parse(TAILSCALE_JSON).unwrap();
    ours.insert(999, Some(DerpRegion { region_code: "shadowed".into(), ..embedded() }));
    let map = merge(vec![ours, parse(HEADSCALE_YAML).unwrap()], Some(embedded()));
    assert_eq!(map.regions.keys().copied().collect::<Vec<_>>(), vec![2, 900, 999]);
    assert_eq!(map.regions[&999].region_code, "headscale");
}

#[test]
fn what_is_not_a_derp_map_is_named() {
    assert!(parse("regions: [1, 2]").is_err());
    assert!(parse("{\"Regions\": {\"one\": {}}}").unwrap_err().contains("\"one\""));
    assert!(parse("not: [valid").is_err());
}

/// A one-request-at-a-time HTTP server answering every request with `status` and `body`.
fn serve(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let answer =
                format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    format!("http://{addr}/derpmap/default")
}

#[tokio::test]
async fn urls_are_fetched_and_paths_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("derp.yaml");
    std::fs::write(&path, HEADSCALE_YAML).unwrap();
    let sources =
        Sources { urls: vec![serve("200 OK", TAILSCALE_JSON)], paths: vec![path], embedded: Some(embedded()) };
    let map = sources.load().await.unwrap();
    assert_eq!(map.regions.keys().copied().collect::<Vec<_>>(), vec![2, 900, 999]);
}

#[tokio::test]
async fn an_unreachable_or_failing_source_is_an_error_that_names_it() {
    let url = serve("404 Not Found", "no");
    let err = Sources { urls: vec![url.clone()], paths: Vec::new(), embedded: None }.load().await.unwrap_err();
    assert!(err.to_string().contains(&url) && err.to_string().contains("404"), "{err}");
    let gone = Sources { urls: vec!["http://127.0.0.1:1/derpmap".into()], paths: Vec::new(), embedded: None };
    assert!(matches!(gone.load().await, Err(DerpMapError::Fetch { .. })));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "regions: [oops]").unwrap();
    let err = Sources { urls: Vec::new(), paths: vec![bad], embedded: None }.load().await.unwrap_err();
    assert!(matches!(err, DerpMapError::Parse { .. }), "{err}");
}

#[tokio::test]
async fn a_changed_file_reaches_sessions_and_a_broken_one_keeps_the_last_good_map() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(Config::embedded(dir.path()));
    let state = State::load(config, crate::db::Db::open_in_memory().unwrap()).await.unwrap();
    let path = dir.path().join("derp.json");
    std::fs::write(&path, TAILSCALE_JSON).unwrap();
    let sources = Sources { urls: Vec::new(), paths: vec![path.clone()], embedded: None };
    assert!(state.set_derp_map(sources.load().await.unwrap()).await);
    assert!(!state.set_derp_map(sources.load().await.unwrap()).await, "the same map is not sent again");
    let mut changes = state.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let refresher = tokio::spawn(keep_current(state.clone(), sources, Duration::from_millis(50), async {
        let _ = stopped.await;
    }));

    std::fs::write(&path, "regions: [broken").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state.snapshot().derp_map.regions.len(), 2, "a broken map keeps the last good one");

    std::fs::write(&path, HEADSCALE_YAML).unwrap();
    let set = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await.unwrap().unwrap();
    assert!(set.changes.iter().any(|c| matches!(c, crate::state::Change::DerpMap)));
    assert_eq!(state.snapshot().derp_map.regions.keys().copied().collect::<Vec<_>>(), vec![900]);
    let _ = stop.send(());
    refresher.await.unwrap();
}

#[test]
fn the_embedded_region_tells_the_port_clients_reach() {
    let mut config = Config::embedded(std::path::Path::new("/nonexistent"));
    config.derp.server.ipv4 = "203.0.113.7".into();
    let bound = Bound { listen: "127.0.0.1:8080".parse().unwrap(), derp_tls: None, stun: None };
    let port = |config: &Config, bound: &Bound| embedded_region(config, bound).unwrap().nodes[0].derp_port;
    config.server_url = "https://hs.example.com".into();
    assert_eq!(port(&config, &bound), 443, "behind a TLS proxy");
    let region = embedded_region(&config, &bound).unwrap();
    assert_eq!((region.nodes[0].host_name.as_str(), region.nodes[0].ipv4.as_str()), ("hs.example.com", "203.0.113.7"));
    config.server_url = "http://hs.example.com:8080".into();
    assert_eq!(port(&config, &bound), 8080);
    let own_tls = Bound { derp_tls: Some("127.0.0.1:8443".parse().unwrap()), ..bound };
    assert_eq!(port(&config, &own_tls), 8443, "the relay's own TLS port");
    config.derp.server.automatically_add_embedded_derp_region = false;
    assert!(embedded_region(&config, &bound).is_none());
}
