//! The kubelet API's request observer against a real server: every answer (401, 403, 404, 200,
//! and the 101 of a streaming upgrade) is reported once, by route template, method and code.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use support::*;
use vk_runtime::api::ObservedRequest;

fn seen(recorded: &Recorded) -> Vec<(&'static str, &'static str, u16)> {
    recorded
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|r: &ObservedRequest| (r.route, r.method, r.status))
        .collect()
}

#[tokio::test]
async fn every_answer_is_observed_by_route_template() {
    let recorded = Arc::new(Recorded::default());
    let server = start_with(Some(recorded.clone())).await;
    assert_eq!(get(&server, "/healthz", None).await.0, 401);
    assert_eq!(get(&server, "/pods", Some("viewer")).await.0, 403);
    assert_eq!(get(&server, "/configz", Some("good")).await.0, 404);
    assert_eq!(
        get(&server, "/containerLogs/default/web/app", Some("good"))
            .await
            .0,
        200
    );
    let mut io = connect(&server).await;
    let upgrade = "POST /exec/default/web/app?command=cat&output=1 HTTP/1.1\r\nHost: localhost\r\n\
        Authorization: Bearer good\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
        X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n";
    let (status, head) = request_head(&mut io, upgrade).await;
    assert_eq!(status, 101, "{head}");
    // Reported when answered, while the session is still open.
    assert_eq!(
        seen(&recorded),
        vec![
            ("/healthz", "GET", 401),
            ("/pods", "GET", 403),
            ("other", "GET", 404),
            ("/containerLogs/{namespace}/{pod}/{container}", "GET", 200),
            ("/exec/{namespace}/{pod}/{container}", "POST", 101),
        ]
    );
    assert!(
        seen(&recorded)
            .iter()
            .all(|(route, _, _)| !route.contains("web")),
        "no pod name in a label"
    );
}
