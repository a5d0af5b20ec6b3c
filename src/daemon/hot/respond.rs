//! Responses to a blocked exec, taken just before the refusal is answered (a response that
//! fails never changes the decision): `response = "freeze"` freezes the container's cgroup,
//! so its processes stay where they are for the responder (`driftgate thaw` undoes it).

use crate::container::cgroup;
use driftgate_core::finding::ResponseRef;
use driftgate_core::policy::Response;

use super::state::Shared;

impl Shared {
    /// Takes `response` on the container whose thread `tid` was refused (finding `finding`).
    pub(super) fn respond(
        &self,
        response: Response,
        container: &str,
        tid: i32,
        finding: &str,
    ) -> ResponseRef {
        match response {
            Response::Freeze => self.freeze(container, tid, finding),
        }
    }

    /// Takes `response` after a blocked exec that is not recorded on its own (a repeat in an
    /// aggregation window, or over the container's finding budget): thread `tid` was refused.
    pub(super) fn respond_unrecorded(&self, response: Response, container: &str, tid: i32) {
        if let Ok(l) = self.frozen.lock() {
            // Already frozen by an earlier finding: nothing left to do.
            if l.iter().any(|x| x.id == container && cgroup::is_frozen(std::path::Path::new(&x.cgroup))) {
                return;
            }
        }
        self.respond(response, container, tid, "(not recorded: a repeat or over the finding budget)");
    }

    fn freeze(&self, container: &str, tid: i32, finding: &str) -> ResponseRef {
        let failed = |cgroup: Option<String>, error: String| {
            tracing::error!(container, error = %error, "could not freeze the container; the exec was blocked");
            ResponseRef { action: "freeze".into(), cgroup, ok: false, error: Some(error) }
        };
        // The thread is held in its exec: it is there to find the cgroup from.
        let (top, cg) = match cgroup::container_of_thread(tid) {
            Ok(x) => x,
            Err(e) => return failed(None, e),
        };
        let shown = cg.dir.display().to_string();
        if let Err(e) = cgroup::check_own(&cg, top).and_then(|()| cgroup::set_frozen(&cg.dir, true)) {
            return failed(Some(shown), e);
        }
        tracing::warn!(
            container,
            cgroup = %shown,
            finding,
            "froze the container after a blocked exec (response = \"freeze\"); `driftgate thaw` undoes it"
        );
        if let Ok(mut l) = self.frozen.lock() {
            l.retain(|x| x.cgroup != shown);
            l.push(crate::container::cgroup::Frozen {
                id: container.to_owned(),
                cgroup: shown.clone(),
                since: driftgate_core::util::now_rfc3339(),
                finding: finding.to_owned(),
            });
        }
        ResponseRef { action: "freeze".into(), cgroup: Some(shown), ok: true, error: None }
    }

    /// The containers frozen by a response and still frozen.
    pub fn frozen(&self) -> Vec<crate::container::cgroup::Frozen> {
        let Ok(mut l) = self.frozen.lock() else { return Vec::new() };
        l.retain(|x| cgroup::is_frozen(std::path::Path::new(&x.cgroup)));
        l.clone()
    }
}
