//! The cluster a node is in, for findings, when the configuration does not name it: the
//! cluster of the kubelet's current context in its kubeconfig (kubeadm writes
//! `/etc/kubernetes/kubelet.conf`). Read once at start-up.

use std::path::Path;

/// Where kubeadm puts the kubelet's kubeconfig.
pub const KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";

/// The cluster name of the kubeconfig at `path`, if it names one.
pub fn from_kubelet(path: &str) -> Option<String> {
    let text = std::fs::read(Path::new(path)).ok()?;
    if text.len() > 1 << 20 {
        return None;
    }
    cluster_of_kubeconfig(&String::from_utf8_lossy(&text))
}

/// The cluster of a kubeconfig's `current-context` (the only context, without one). A
/// kubeconfig is YAML as `kubectl` and kubeadm write it: block style, one key a line; this
/// reads that shape, and gives `None` for anything else.
pub fn cluster_of_kubeconfig(text: &str) -> Option<String> {
    let value = |l: &str, key: &str| {
        l.trim_start_matches([' ', '-'])
            .strip_prefix(key)
            .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
            .filter(|v| !v.is_empty())
    };
    let current =
        text.lines().filter(|l| !l.starts_with([' ', '-'])).find_map(|l| value(l, "current-context:"));
    // Each context: its `name` and its `cluster`, in either order, inside `contexts:`.
    let mut in_contexts = false;
    let mut entries: Vec<(Option<String>, Option<String>)> = Vec::new();
    for l in text.lines() {
        if !l.starts_with([' ', '-']) {
            in_contexts = l.trim_end() == "contexts:";
            continue;
        }
        if !in_contexts {
            continue;
        }
        if l.trim_start().starts_with('-') {
            entries.push((None, None));
        }
        let Some(e) = entries.last_mut() else { continue };
        if let Some(c) = value(l, "cluster:") {
            e.1 = Some(c);
        } else if let Some(n) = value(l, "name:") {
            // `context:` nests `cluster`; the entry's own `name` is the context's.
            e.0 = Some(n);
        }
    }
    match current {
        Some(cur) => entries.into_iter().find(|(n, _)| n.as_deref() == Some(&cur)).and_then(|(_, c)| c),
        None if entries.len() == 1 => entries.pop().and_then(|(_, c)| c),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_of_the_current_context_is_read_from_a_kubeadm_kubeconfig() {
        let kubeadm = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: LS0t\n    server: https://10.0.0.1:6443\n  name: prod-eu\ncontexts:\n- context:\n    cluster: prod-eu\n    user: system:node:node-1\n  name: system:node:node-1@prod-eu\n- context:\n    cluster: other\n    user: x\n  name: other-ctx\ncurrent-context: system:node:node-1@prod-eu\nkind: Config\nusers:\n- name: system:node:node-1\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n";
        assert_eq!(cluster_of_kubeconfig(kubeadm).as_deref(), Some("prod-eu"));
        let quoted =
            "contexts:\n- name: \"c\"\n  context:\n    cluster: \"staging\"\ncurrent-context: \"c\"\n";
        assert_eq!(cluster_of_kubeconfig(quoted).as_deref(), Some("staging"));
        let only = "contexts:\n- context:\n    cluster: solo\n  name: x\n";
        assert_eq!(cluster_of_kubeconfig(only).as_deref(), Some("solo"), "one context, no current");
        assert_eq!(
            cluster_of_kubeconfig(
                "current-context: missing\ncontexts:\n- context:\n    cluster: a\n  name: b\n"
            ),
            None
        );
        assert_eq!(cluster_of_kubeconfig("{json: true}"), None);
        assert_eq!(from_kubelet("/nonexistent/kubelet.conf"), None);
    }
}
