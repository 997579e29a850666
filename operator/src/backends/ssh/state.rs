//! The device's pod state as the status poll prints it, parsed, and turned into what the runtime
//! reports ([`BackendPodStatus`]). Pure: no I/O, tested with plain strings.
//!
//! Poll output, one record per line: `boot ID`, then per pod `pod UID`, `meta NAMESPACE|NAME|UID|NODE`
//! (four lines; three before pods recorded their node), `spec policy P` / `spec init NAME` / `spec main NAME` / `spec image NAME IMAGE`,
//! `sup ALIVE PHASE` (ALIVE: 1 running, 0 gone, 2 not started yet), `stop` while deleting, and per
//! container `c NAME PID ALIVE STARTED EXIT FINISHED RESTARTS PREV` (`-` for unknown; PREV is
//! `CODE STARTED FINISHED` of the run before), and finally `end`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use vk_runtime::{BackendPodStatus, ContainerState, ContainerStatus, PodRef};

use super::plan::Policy;

/// The supervisor of a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sup {
    Alive,
    /// Gone without finishing (killed, or the device rebooted).
    Dead,
    #[default]
    NotStarted,
}

/// One container's recorded state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CState {
    pub pid: u32,
    pub alive: bool,
    pub started: Option<i64>,
    pub exit: Option<i32>,
    pub finished: Option<i64>,
    pub restarts: i32,
    /// Exit code, start and finish of the previous run.
    pub prev: Option<(i32, i64, i64)>,
}

/// One pod's recorded state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub pod_ref: PodRef,
    pub policy: Policy,
    pub init: Vec<String>,
    pub main: Vec<String>,
    pub images: BTreeMap<String, String>,
    pub sup: Sup,
    pub phase: Option<String>,
    pub stopping: bool,
    pub containers: BTreeMap<String, CState>,
    /// The VirtualNode the pod was started for; `None` when not recorded.
    pub node: Option<String>,
}

/// Every pod on a device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub boot: String,
    pub pods: BTreeMap<PodRef, PodState>,
}

/// Why poll output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("status output ended early (no `end` line)")]
    Truncated,
}

fn num<T: std::str::FromStr>(s: Option<&str>) -> Option<T> {
    s.filter(|v| *v != "-").and_then(|v| v.parse().ok())
}

fn container(fields: &[&str]) -> Option<(String, CState)> {
    let f = |i: usize| fields.get(i).copied();
    let prev = match (num(f(8)), num(f(9)), num(f(10))) {
        (Some(c), Some(s), Some(e)) => Some((c, s, e)),
        _ => None,
    };
    Some((
        f(1)?.to_string(),
        CState {
            pid: num(f(2)).unwrap_or(0),
            alive: f(3) == Some("1"),
            started: num(f(4)),
            exit: num(f(5)),
            finished: num(f(6)),
            restarts: num(f(7)).unwrap_or(0),
            prev,
        },
    ))
}

/// Parse poll output. Pods with incomplete records (half-written by a concurrent start) are skipped.
///
/// # Errors
/// [`ParseError::Truncated`] when the output does not end with `end`.
pub fn parse(out: &str) -> Result<Snapshot, ParseError> {
    struct Partial {
        meta: Vec<String>,
        spec: Vec<String>,
        state: Option<PodState>,
    }
    let mut snap = Snapshot::default();
    let mut cur: Option<Partial> = None;
    let mut done = false;
    let finish = |p: Option<Partial>, snap: &mut Snapshot| {
        let Some(mut p) = p else { return };
        let Some(mut st) = p.state.take() else { return };
        let (ns, name, uid, node) = match p.meta.as_slice() {
            [ns, name, uid] => (ns, name, uid, None),
            [ns, name, uid, node] => (ns, name, uid, Some(node).filter(|n| !n.is_empty())),
            _ => return,
        };
        st.pod_ref = PodRef {
            namespace: ns.clone(),
            name: name.clone(),
            uid: uid.clone(),
        };
        st.node = node.cloned();
        for line in &p.spec {
            let mut w = line.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("policy"), Some(v), _) => {
                    st.policy = Policy::parse(v).unwrap_or(Policy::Always)
                }
                (Some("init"), Some(n), _) => st.init.push(n.to_string()),
                (Some("main"), Some(n), _) => st.main.push(n.to_string()),
                (Some("image"), Some(n), img) => {
                    st.images
                        .insert(n.to_string(), img.unwrap_or_default().to_string());
                }
                _ => {}
            }
        }
        if !st.main.is_empty() {
            snap.pods.insert(st.pod_ref.clone(), st);
        }
    };
    for line in out.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "boot" => snap.boot = rest.to_string(),
            "pod" => {
                finish(cur.take(), &mut snap);
                cur = Some(Partial {
                    meta: vec![],
                    spec: vec![],
                    state: Some(PodState {
                        pod_ref: PodRef {
                            namespace: String::new(),
                            name: String::new(),
                            uid: rest.to_string(),
                        },
                        policy: Policy::Always,
                        init: vec![],
                        main: vec![],
                        images: BTreeMap::new(),
                        sup: Sup::NotStarted,
                        phase: None,
                        stopping: false,
                        containers: BTreeMap::new(),
                        node: None,
                    }),
                });
            }
            "end" => {
                finish(cur.take(), &mut snap);
                done = true;
            }
            _ => {
                let Some(p) = cur.as_mut() else { continue };
                match kind {
                    "meta" => p.meta.push(rest.to_string()),
                    "spec" => p.spec.push(rest.to_string()),
                    "stop" => {
                        if let Some(s) = p.state.as_mut() {
                            s.stopping = true;
                        }
                    }
                    "sup" => {
                        let mut w = rest.split(' ');
                        if let Some(s) = p.state.as_mut() {
                            s.sup = match w.next() {
                                Some("1") => Sup::Alive,
                                Some("0") => Sup::Dead,
                                _ => Sup::NotStarted,
                            };
                            s.phase = w.next().filter(|v| *v != "-").map(str::to_string);
                        }
                    }
                    "c" => {
                        let fields: Vec<&str> = line.split(' ').collect();
                        if let (Some((n, c)), Some(s)) = (container(&fields), p.state.as_mut()) {
                            s.containers.insert(n, c);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if done {
        Ok(snap)
    } else {
        Err(ParseError::Truncated)
    }
}

fn ts(secs: Option<i64>) -> Option<Timestamp> {
    secs.and_then(|s| Timestamp::from_second(s).ok())
}

fn terminated(code: i32, started: Option<i64>, finished: Option<i64>) -> ContainerState {
    ContainerState::Terminated {
        exit_code: code,
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        message: None,
        started_at: ts(started),
        finished_at: ts(finished).unwrap_or(Timestamp::UNIX_EPOCH),
    }
}

impl PodState {
    /// Whether the pod will not run anything any more.
    pub fn finished(&self) -> bool {
        matches!(self.phase.as_deref(), Some("done" | "failed")) || self.sup == Sup::Dead
    }

    fn status_of(&self, name: &str, init: bool, waiting_reason: &str) -> ContainerStatus {
        let c = self.containers.get(name);
        let prev = c
            .and_then(|c| c.prev)
            .map(|(code, s, f)| terminated(code, Some(s), Some(f)));
        let (state, last) = match c {
            None => (
                ContainerState::Waiting {
                    reason: waiting_reason.into(),
                    message: None,
                },
                None,
            ),
            Some(c) => match (c.exit, c.alive) {
                (Some(code), _) => {
                    let run = terminated(code, c.started, c.finished);
                    let again = self.policy.restarts(init, code)
                        && self.sup == Sup::Alive
                        && !self.stopping;
                    if again {
                        let message = format!("back-off restarting container {name} (exit code {code})");
                        (
                            ContainerState::Waiting {
                                reason: "CrashLoopBackOff".into(),
                                message: Some(message),
                            },
                            Some(run),
                        )
                    } else {
                        (run, prev)
                    }
                }
                (None, true) => (
                    ContainerState::Running {
                        started_at: ts(c.started).unwrap_or(Timestamp::UNIX_EPOCH),
                    },
                    prev,
                ),
                (None, false) if self.sup == Sup::Dead => (
                    ContainerState::Terminated {
                        exit_code: 137,
                        reason: "ContainerStatusUnknown".into(),
                        message: Some(
                            "the process is gone without an exit code (device rebooted or supervisor killed)"
                                .into(),
                        ),
                        started_at: ts(c.started),
                        finished_at: ts(c.started).unwrap_or(Timestamp::UNIX_EPOCH),
                    },
                    prev,
                ),
                (None, false) => (
                    ContainerState::Waiting {
                        reason: "ContainerCreating".into(),
                        message: None,
                    },
                    prev,
                ),
            },
        };
        ContainerStatus {
            name: name.to_string(),
            ready: matches!(state, ContainerState::Running { .. }),
            state,
            last_termination: last,
            restart_count: c.map_or(0, |c| c.restarts),
            image: self.images.get(name).cloned().unwrap_or_default(),
            container_id: c
                .filter(|c| c.pid > 0)
                .map(|c| format!("ssh://{}/{}/{}", self.pod_ref.uid, name, c.pid)),
        }
    }

    /// What the runtime reports for this pod; `pod_ip` is the device's.
    pub fn status(&self, pod_ip: Option<String>) -> BackendPodStatus {
        let inits_done = self
            .init
            .iter()
            .all(|n| self.containers.get(n).and_then(|c| c.exit) == Some(0));
        let init_containers = self
            .init
            .iter()
            .map(|n| self.status_of(n, true, "PodInitializing"))
            .collect();
        let waiting = if inits_done {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let containers = self
            .main
            .iter()
            .map(|n| self.status_of(n, false, waiting))
            .collect();
        let started_at = self.containers.values().filter_map(|c| c.started).min();
        let (reason, message) = match (self.sup, self.phase.as_deref()) {
            (_, Some("failed")) => (
                Some("InitContainerFailed".into()),
                Some("an init container failed".into()),
            ),
            (Sup::Dead, _) if !self.finished_by_phase() => (
                Some("SupervisorLost".into()),
                Some("the pod's supervisor on the device is gone (device rebooted?)".into()),
            ),
            _ => (None, None),
        };
        BackendPodStatus {
            init_containers,
            containers,
            pod_ip,
            started_at: ts(started_at),
            finished: self.finished(),
            message,
            reason,
        }
    }

    fn finished_by_phase(&self) -> bool {
        matches!(self.phase.as_deref(), Some("done" | "failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "boot b1\npod u1\nmeta ns\nmeta p\nmeta u1\nspec policy OnFailure\nspec init first\nspec main main\nspec image main busybox:1\nsup 1 -\nc first 10 0 100 0 101 0 -\nc main 11 0 102 3 103 1 3 101 102\nend\n";

    #[test]
    fn parses_and_reports_backoff() {
        let snap = parse(OUT).unwrap();
        let (r, p) = snap.pods.iter().next().unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.name.as_str(), r.uid.as_str()),
            ("ns", "p", "u1")
        );
        assert_eq!(p.policy, Policy::OnFailure);
        let s = p.status(Some("10.0.0.1".into()));
        assert!(!s.finished);
        assert!(matches!(
            s.init_containers[0].state,
            ContainerState::Terminated { exit_code: 0, .. }
        ));
        let main = &s.containers[0];
        assert!(
            matches!(&main.state, ContainerState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
        );
        assert!(matches!(
            main.last_termination,
            Some(ContainerState::Terminated { exit_code: 3, .. })
        ));
        assert_eq!(main.restart_count, 1);
        assert_eq!(main.image, "busybox:1");
    }

    #[test]
    fn running_done_lost_and_truncated() {
        let running = OUT.replace(
            "c main 11 0 102 3 103 1 3 101 102",
            "c main 11 1 102 - - 0 -",
        );
        let s = parse(&running)
            .unwrap()
            .pods
            .into_values()
            .next()
            .unwrap()
            .status(None);
        assert!(
            s.containers[0].ready
                && matches!(s.containers[0].state, ContainerState::Running { .. })
        );
        let done = OUT.replace("sup 1 -", "sup 0 done");
        let s = parse(&done)
            .unwrap()
            .pods
            .into_values()
            .next()
            .unwrap()
            .status(None);
        assert!(s.finished && s.reason.is_none());
        assert!(matches!(
            s.containers[0].state,
            ContainerState::Terminated { exit_code: 3, .. }
        ));
        let lost = running
            .replace("sup 1 -", "sup 0 -")
            .replace("c main 11 1", "c main 11 0");
        let s = parse(&lost)
            .unwrap()
            .pods
            .into_values()
            .next()
            .unwrap()
            .status(None);
        assert!(s.finished);
        assert!(
            matches!(&s.containers[0].state, ContainerState::Terminated { reason, .. } if reason == "ContainerStatusUnknown")
        );
        assert_eq!(parse("boot x\npod u\n"), Err(ParseError::Truncated));
        let waiting = "boot b\npod u\nmeta a\nmeta b\nmeta u\nspec policy Always\nspec init i\nspec main m\nsup 2 -\nend\n";
        let s = parse(waiting)
            .unwrap()
            .pods
            .into_values()
            .next()
            .unwrap()
            .status(None);
        assert!(
            matches!(&s.containers[0].state, ContainerState::Waiting { reason, .. } if reason == "PodInitializing")
        );
    }

    #[test]
    fn meta_names_the_node_when_recorded() {
        let pod = |meta: &str| {
            let out =
                format!("boot b\npod u\n{meta}spec policy Always\nspec main m\nsup 1 -\nend\n");
            parse(&out)
                .unwrap()
                .pods
                .into_values()
                .next()
                .map(|p| p.node)
        };
        assert_eq!(
            pod("meta a\nmeta b\nmeta u\nmeta n1\n"),
            Some(Some("n1".into()))
        );
        assert_eq!(pod("meta a\nmeta b\nmeta u\nmeta \n"), Some(None));
        assert_eq!(pod("meta a\nmeta b\nmeta u\n"), Some(None));
        assert_eq!(pod("meta a\nmeta b\n"), None);
    }
}
