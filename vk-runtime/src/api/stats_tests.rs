use super::*;
use crate::provider::PodRef;

fn sample() -> StatsSummary {
    let ts: Timestamp = "2024-05-01T10:00:00Z".parse().unwrap();
    let u = |cpu_ns: u64, mem: u64| Usage {
        cpu_usage_core_nano_seconds: cpu_ns,
        cpu_usage_nano_cores: 1000,
        memory_working_set_bytes: mem,
        timestamp: Some(ts),
    };
    StatsSummary {
        node: u(5_000_000_000, 1 << 20),
        pods: vec![(
            PodRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
            },
            vec![
                ("app".into(), u(1_500_000_000, 100)),
                ("side\"car".into(), u(500_000_000, 50)),
            ],
        )],
    }
}

#[test]
fn summary_json_has_the_kubelet_shape() {
    let now: Timestamp = "2024-05-01T10:00:05Z".parse().unwrap();
    let v = serde_json::to_value(summary("n1", &sample(), now, now)).unwrap();
    assert_eq!(v["node"]["nodeName"], "n1");
    assert_eq!(v["node"]["cpu"]["usageCoreNanoSeconds"], 5_000_000_000u64);
    assert_eq!(v["node"]["memory"]["workingSetBytes"], 1u64 << 20);
    assert_eq!(v["pods"][0]["podRef"]["uid"], "u1");
    assert_eq!(
        v["pods"][0]["cpu"]["usageCoreNanoSeconds"],
        2_000_000_000u64
    );
    assert_eq!(v["pods"][0]["memory"]["workingSetBytes"], 150);
    assert_eq!(v["pods"][0]["containers"][1]["name"], "side\"car");
    assert_eq!(v["node"]["cpu"]["time"], "2024-05-01T10:00:00Z");
}

#[test]
fn resource_metrics_text() {
    let now: Timestamp = "2024-05-01T10:00:05Z".parse().unwrap();
    let text = resource_metrics(Some(&sample()), now);
    let ms = 1_714_557_600_000i64;
    assert!(
        text.contains(&format!("node_cpu_usage_seconds_total 5 {ms}\n")),
        "{text}"
    );
    assert!(text.contains(&format!("node_memory_working_set_bytes 1048576 {ms}\n")));
    assert!(text.contains(&format!("container_cpu_usage_seconds_total{{container=\"app\",namespace=\"default\",pod=\"web\"}} 1.5 {ms}\n")));
    assert!(text.contains("container=\"side\\\"car\""));
    assert!(text.contains(&format!(
        "pod_memory_working_set_bytes{{namespace=\"default\",pod=\"web\"}} 150 {ms}\n"
    )));
    assert!(text.contains("# TYPE pod_cpu_usage_seconds_total counter\n"));
    assert!(text.contains("scrape_error 0"));
    assert!(resource_metrics(None, now).contains("scrape_error 1\n"));
}
