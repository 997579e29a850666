//! Wire protocols of the kubelet API.
