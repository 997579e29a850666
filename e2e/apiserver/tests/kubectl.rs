//! Real kubectl against the test apiserver: discovery (`api-resources`, short names, categories),
//! server-side apply, Table output with a CRD's printer columns, CEL rejections.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use fleetlet_test_apiserver::TestApiServer;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.dev}
spec:
  group: example.dev
  scope: Cluster
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gdg], categories: [demo]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {size: {type: integer}}
            x-kubernetes-validations: [{rule: "self.size <= 10", message: "size must be at most 10"}]
          status:
            type: object
            properties:
              conditions: {type: array, items: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: doodads.example.dev}
spec:
  group: example.dev
  scope: Namespaced
  names: {plural: doodads, singular: doodad, kind: Doodad, categories: [demo]}
  versions:
  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
"#;

struct Kubectl(PathBuf);

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        use std::io::Write;
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.0).args(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl on PATH");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = self.run(args, stdin);
        assert!(ok, "kubectl {args:?} failed:\n{out}");
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_discovery_apply_and_tables() {
    let s = TestApiServer::start().await;
    let dir = std::env::temp_dir().join(format!("fleetlet-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    s.write_kubeconfig(&kc).unwrap();
    let k = Kubectl(kc);
    let out = tokio::task::spawn_blocking(move || {
        let mut log = String::new();
        log += &k.ok(&["apply", "-f", "-"], Some(CRD));
        let res = k.ok(&["api-resources"], None);
        assert!(res.contains("gadgets") && res.contains("gdg") && res.contains("leases"), "{res}");
        k.ok(&["apply", "--server-side", "-f", "-"], Some("apiVersion: example.dev/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: 3}\n"));
        k.ok(&["apply", "--server-side", "-f", "-"], Some("apiVersion: example.dev/v1\nkind: Doodad\nmetadata: {name: d1}\nspec: {x: 1}\n"));
        k.ok(&["patch", "gdg", "g1", "--subresource=status", "--type=merge", "-p", r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#], None);
        let table = k.ok(&["get", "gdg"], None);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].split_whitespace().eq(["NAME", "READY", "SIZE"]), "{table}");
        assert!(lines[1].split_whitespace().eq(["g1", "True", "3"]), "{table}");
        let cat = k.ok(&["get", "demo", "-A"], None);
        assert!(cat.contains("gadget.example.dev/g1") && cat.contains("doodad.example.dev/d1"), "{cat}");
        let (ok, err) = k.run(&["apply", "--server-side", "-f", "-"], Some("apiVersion: example.dev/v1\nkind: Gadget\nmetadata: {name: g2}\nspec: {size: 30}\n"));
        assert!(!ok && err.contains("size must be at most 10"), "{err}");
        log += &k.ok(&["get", "pods", "-A"], None);
        log += &k.ok(&["get", "namespaces", "default", "-o", "jsonpath={.status.phase}"], None);
        log
    })
    .await
    .unwrap();
    assert!(out.contains("Active"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}
