//! The node Lease in `kube-node-lease`, renewed with a PUT of the last object we wrote: no GET per
//! renewal. A GET happens only when the PUT conflicts (someone else wrote the Lease) and a create only
//! when it is missing; for a node just created the Lease is created straight away (no GET first).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::PostParams;

/// Namespace holding node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Keeps one node's Lease fresh.
pub struct LeaseKeeper {
    name: String,
    duration: Duration,
    /// Field manager of the Lease writes.
    field_manager: Arc<str>,
    owner: Option<OwnerReference>,
    current: Option<Lease>,
    /// The Lease most likely does not exist (its Node was just created): create before reading.
    create_first: bool,
}

impl LeaseKeeper {
    /// `field_manager` is shared by the fleet's nodes (one allocation, not one per node).
    pub fn new(name: &str, duration: Duration, field_manager: Arc<str>) -> Self {
        Self {
            name: name.into(),
            duration,
            field_manager,
            owner: None,
            current: None,
            create_first: false,
        }
    }

    /// Owner reference (the Node) set on the Lease, so deleting the Node garbage-collects it.
    pub fn set_owner(&mut self, owner: OwnerReference) {
        if self.owner.as_ref().map(|o| &o.uid) != Some(&owner.uid) {
            self.owner = Some(owner);
            // A new owner (the Node was re-created) must reach the Lease: rewrite it from a fresh read.
            self.current = None;
        }
    }

    /// The node's Node was just created, so its Lease most likely does not exist yet: the next renewal
    /// creates it without reading first (and reads only if the create conflicts).
    pub fn expect_absent(&mut self) {
        self.create_first = true;
    }

    /// Renew the Lease now.
    ///
    /// # Errors
    /// The API error of the last attempt; the caller retries on its own schedule.
    pub async fn renew(&mut self, client: &kube::Client) -> Result<(), kube::Error> {
        let api: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
        let now = Timestamp::now();
        let pp = PostParams {
            field_manager: Some(self.field_manager.to_string()),
            ..PostParams::default()
        };
        if let Some(mut lease) = self.current.take() {
            self.stamp(&mut lease, now);
            match api.replace(&self.name, &pp, &lease).await {
                Ok(written) => {
                    self.current = Some(kept(written));
                    return Ok(());
                }
                Err(e) if !is_status(&e, 409) && !is_status(&e, 404) => {
                    // The API did not answer or refused for now (an outage): the kept Lease is
                    // still the best guess, so the renewal after it is a PUT, not a GET and a PUT
                    // (a write that landed after all makes that PUT conflict, and then it reads).
                    self.current = Some(lease);
                    return Err(e);
                }
                Err(_) => {} // conflict or gone: fall through to read-modify-write
            }
        }
        if std::mem::take(&mut self.create_first) {
            match api.create(&pp, &self.fresh(now)).await {
                Ok(written) => {
                    self.current = Some(kept(written));
                    return Ok(());
                }
                Err(e) if !is_status(&e, 409) => return Err(e),
                Err(_) => {} // it exists after all: read-modify-write
            }
        }
        match api.get_opt(&self.name).await? {
            Some(mut lease) => {
                self.stamp(&mut lease, now);
                self.current = Some(kept(api.replace(&self.name, &pp, &lease).await?));
            }
            None => self.current = Some(kept(api.create(&pp, &self.fresh(now)).await?)),
        }
        Ok(())
    }

    /// A new Lease object stamped at `now`.
    fn fresh(&self, now: Timestamp) -> Lease {
        let mut lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(NODE_LEASE_NAMESPACE.into()),
                ..Default::default()
            },
            spec: None,
        };
        self.stamp(&mut lease, now);
        lease
    }

    /// Delete the Lease (node removal).
    pub async fn delete(&mut self, client: &kube::Client) -> Result<(), kube::Error> {
        self.current = None;
        let api: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
        match api.delete(&self.name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn stamp(&self, lease: &mut Lease, now: Timestamp) {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.name.clone());
        spec.lease_duration_seconds = Some(i32::try_from(self.duration.as_secs()).unwrap_or(40));
        spec.renew_time = Some(MicroTime(now));
        if let Some(owner) = &self.owner {
            lease.metadata.owner_references = Some(vec![owner.clone()]);
        }
    }
}

/// The Lease as kept between renewals: without `managedFields` (a real API server returns a few hundred
/// bytes of them, per node, for nothing; a PUT without them leaves the server's untouched).
fn kept(mut lease: Lease) -> Lease {
    lease.metadata.managed_fields = None;
    lease
}

/// Whether a kube error is an API answer with this HTTP status.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http::{Request, Response, StatusCode};
    use kube::client::Body;

    use super::*;

    /// A kube client over a stand-in API that answers each request with the next status in `script`
    /// (echoing the request body on 200/201) and records `METHOD path` of each.
    fn scripted(script: Vec<StatusCode>) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let log = seen.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let (log, script) = (log.clone(), script.clone());
            async move {
                log.lock()
                    .unwrap()
                    .push(format!("{} {}", req.method(), req.uri().path()));
                let status = script.lock().unwrap().next().unwrap_or(StatusCode::OK);
                let body = if status.is_success() {
                    let bytes = http_body_util::BodyExt::collect(req.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    let mut lease: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    lease["metadata"]["resourceVersion"] = "2".into();
                    lease.to_string()
                } else {
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "ServiceUnavailable", "code": status.as_u16()})
                    .to_string()
                };
                let resp = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body.into_bytes()))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        (kube::Client::new(service, "default"), seen)
    }

    #[tokio::test]
    async fn a_renewal_the_api_refused_is_retried_with_a_put_not_a_read() {
        let path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-0";
        let (client, seen) = scripted(vec![
            StatusCode::CREATED,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK,
        ]);
        let mut keeper = LeaseKeeper::new("edge-0", Duration::from_secs(40), "fleetlet".into());
        keeper.expect_absent();
        keeper.renew(&client).await.unwrap();
        assert!(
            keeper.renew(&client).await.is_err(),
            "503 reaches the caller"
        );
        keeper.renew(&client).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                "POST /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases".to_string(),
                format!("PUT {path}"),
                format!("PUT {path}"),
            ]
        );
    }
}
