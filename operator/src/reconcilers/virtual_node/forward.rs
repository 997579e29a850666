//! Node state changes become reconciles of their VirtualNode: one listener for the whole fleet and one
//! task, instead of a task per node waiting on its state channel (a kilobyte or more per node). A change
//! of the pod count alone is forwarded at most every [`POD_COUNT_REFRESH`] (any other change carries the
//! current count along), so a busy node does not cost a VirtualNode status write per heartbeat.

use std::collections::HashMap;
use std::sync::Arc;

use fleetlet_crds::VirtualNode;
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::{DelayQueue, delay_queue};
use vk_runtime::fleet::{NodeState, StateListener};

use super::settle::{POD_COUNT_REFRESH, only_pod_count_changed};

/// The fleet's state listener: hands each change to the forwarding task.
#[derive(Debug)]
pub struct Forwarder {
    tx: mpsc::UnboundedSender<(String, bool)>,
}

impl StateListener for Forwarder {
    fn changed(&self, node: &str, before: &NodeState, after: &NodeState) {
        let _ = self
            .tx
            .send((node.to_string(), only_pod_count_changed(before, after)));
    }
}

/// Start forwarding into `trigger` (the VirtualNode controller's reconcile requests). The task ends
/// when the listener is dropped or the controller stops listening.
pub fn start(trigger: mpsc::UnboundedSender<ObjectRef<VirtualNode>>) -> Arc<Forwarder> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(rx, trigger));
    Arc::new(Forwarder { tx })
}

enum Due {
    /// A pod-count change held back: forward it now.
    Deferred,
    /// The node's last forward is a refresh interval old: forget when it was.
    Forget,
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<(String, bool)>,
    trigger: mpsc::UnboundedSender<ObjectRef<VirtualNode>>,
) {
    // Nodes forwarded within the last refresh interval, and those with a change held back.
    let mut last: HashMap<String, Instant> = HashMap::new();
    let mut deferred: HashMap<String, delay_queue::Key> = HashMap::new();
    let mut queue: DelayQueue<(String, Due)> = DelayQueue::new();
    loop {
        let name = tokio::select! {
            msg = rx.recv() => {
                let Some((name, pods_only)) = msg else { return };
                let recent = last.get(&name).map(Instant::elapsed).filter(|e| *e < POD_COUNT_REFRESH);
                if pods_only && let Some(elapsed) = recent {
                    if let std::collections::hash_map::Entry::Vacant(slot) = deferred.entry(name) {
                        let name = slot.key().clone();
                        slot.insert(queue.insert((name, Due::Deferred), POD_COUNT_REFRESH - elapsed));
                    }
                    continue;
                }
                name
            }
            Some(due) = queue.next(), if !queue.is_empty() => match due.into_inner() {
                (name, Due::Deferred) => {
                    deferred.remove(&name);
                    name
                }
                (name, Due::Forget) => {
                    if last.get(&name).is_some_and(|t| t.elapsed() >= POD_COUNT_REFRESH) {
                        last.remove(&name);
                        if last.is_empty() {
                            last = HashMap::new();
                        }
                    }
                    continue;
                }
            },
        };
        if let Some(key) = deferred.remove(&name) {
            queue.remove(&key);
        }
        if deferred.is_empty() {
            deferred = HashMap::new();
        }
        queue.insert((name.clone(), Due::Forget), POD_COUNT_REFRESH);
        last.insert(name.clone(), Instant::now());
        if trigger.send(ObjectRef::new(&name)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vk_runtime::Health;

    fn state(pods: usize, registered: bool) -> NodeState {
        NodeState {
            registered,
            error: None,
            health: Health::healthy(),
            pods,
            identity: None,
        }
    }

    async fn drain(rx: &mut mpsc::UnboundedReceiver<ObjectRef<VirtualNode>>) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut got = Vec::new();
        while let Ok(r) = rx.try_recv() {
            got.push(r.name);
        }
        got
    }

    #[tokio::test(start_paused = true)]
    async fn pod_count_changes_are_paced_and_others_go_at_once() {
        let (trigger, mut rx) = mpsc::unbounded_channel();
        let f = start(trigger);
        f.changed("a", &state(0, false), &state(0, true));
        assert_eq!(drain(&mut rx).await, ["a"], "a real change: at once");
        f.changed("a", &state(0, true), &state(1, true));
        f.changed("a", &state(1, true), &state(2, true));
        f.changed("b", &state(0, true), &state(1, true));
        assert_eq!(
            drain(&mut rx).await,
            ["b"],
            "pod counts of a node forwarded a moment ago wait; another node's do not"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        f.changed("a", &state(2, true), &state(2, false));
        assert_eq!(
            drain(&mut rx).await,
            ["a"],
            "a real change goes at once, and carries the held pod count"
        );
        f.changed("a", &state(2, false), &state(3, false));
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(drain(&mut rx).await, Vec::<String>::new());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            drain(&mut rx).await,
            ["a"],
            "the held pod count goes a refresh interval after the last forward"
        );
        tokio::time::sleep(Duration::from_secs(120)).await;
        f.changed("a", &state(3, false), &state(4, false));
        assert_eq!(
            drain(&mut rx).await,
            ["a"],
            "long after the last forward a pod count goes at once"
        );
    }
}
