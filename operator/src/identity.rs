//! Node identities (`--node-identity=node`): how the Fleet issues each virtual node's certificates and
//! builds its client.

use std::sync::Arc;
use std::time::Duration;

use fleetlet_crds::consts::{FIELD_MANAGER, LABEL_CERTIFICATE, LABEL_VIRTUAL_NODE};
use kube::{Client, Config};
use vk_runtime::certs::IdentityConfig;
use vk_runtime::certs::order::IssueOrder;
use vk_runtime::certs::store::{SecretIndex, SecretStore};
use vk_runtime::certs::waiter::CsrWaiter;

use crate::cli::{NodeIdentityMode, RunArgs};
use crate::fence::WriteGate;
use crate::metrics::Metrics;
use crate::metrics::stack::Sizing;

/// How node identities are issued (`--node-identity=node`), or `None` for the operator's identity.
///
/// # Errors
/// A `--node-certificate-duration` the CSR API would reject.
pub fn identity_config(
    args: &RunArgs,
    base: Config,
    client: &Client,
    metrics: &Metrics,
    gate: &WriteGate,
) -> anyhow::Result<Option<Arc<IdentityConfig>>> {
    if args.node_identity == NodeIdentityMode::Operator {
        return Ok(None);
    }
    if let Some(d) = args.node_certificate_duration
        && d < Duration::from_secs(600)
    {
        anyhow::bail!(
            "--node-certificate-duration must be at least 10m (the CSR API rejects shorter), got {d:?}"
        );
    }
    let metrics = metrics.clone();
    let gate = gate.clone();
    // Economy mode keeps the node's connection too: with the node transport a kept connection costs
    // less memory than reconnecting for every renewal, and no handshake per write.
    let sizing = Sizing::NODE;
    Ok(Some(Arc::new(IdentityConfig {
        base,
        make_client: Arc::new(move |cfg| {
            crate::metrics::stack::node_client_source(cfg, &metrics, sizing, &gate)
        }),
        operator: client.clone(),
        csrs: CsrWaiter::start(client.clone(), LABEL_VIRTUAL_NODE),
        order: IssueOrder::default(),
        secrets: SecretStore {
            client: client.clone(),
            namespace: args.namespace(),
            node_label: LABEL_VIRTUAL_NODE.into(),
            kind_label: LABEL_CERTIFICATE.into(),
            field_manager: FIELD_MANAGER.into(),
            index: SecretIndex::default(),
        },
        expiration: args.node_certificate_duration,
        approval_timeout: args.csr_approval_timeout,
        backoff: (Duration::from_secs(5), Duration::from_secs(300)),
    })))
}
