//! What the sweep does at a group's edges: the plan's own server started, checked and stopped
//! per setting (recorded in the manifest), and a model's load recorded apart from its levels.

use super::sweep::Sweep;
use crate::plan::Phase;
use tokengun_common::CycleSummary;
use tokengun_common::run_dir::ServerProcess;

impl Sweep<'_> {
    /// The plan's own server runs the setting of `phase`'s group: when another setting runs,
    /// it is stopped and this one started (and checked healthy). Err-like reason when it did not
    /// come up (the sweep stops there, its results so far kept).
    pub(super) async fn ensure_server(&mut self, phase: &Phase) -> Option<String> {
        let server = self.cfg.matrix.server.clone()?;
        let want = self.groups.get(phase.group).and_then(|g| g.setting)?;
        if self.up.server.as_ref().map(|s| s.0) != Some(want) {
            if let Some((old, _)) = self.up.server.take() {
                let how = crate::fleet::server::stop(&self.up, &server).await;
                self.console.line(&format!(
                    "\n■ server ({}) stopped: {how}",
                    server.settings[old].label
                ));
                self.record_server(old, |p| p.stopped = how.clone());
            }
            let label = &server.settings[want].label;
            self.console.line(&format!(
                "\n■ starting {} {} ({label})",
                server.command,
                server.settings[want].args.join(" ")
            ));
            match crate::fleet::server::start_setting(&self.up, &self.cfg, &server, want).await {
                Ok(p) => self.up.server = Some((want, p)),
                Err(e) => return Some(e.to_string()),
            }
        }
        if let Some((i, p)) = self.up.server.clone() {
            let said = self
                .manifest
                .groups
                .get(phase.group)
                .is_some_and(|g| g.server.is_some());
            if !said {
                self.console.line(&format!(
                    "  server pid {} ready after {:.2} s{}",
                    p.pid.map_or("?".into(), |p| p.to_string()),
                    p.ready_s,
                    if p.version.is_empty() {
                        String::new()
                    } else {
                        format!(", version {}", p.version)
                    }
                ));
            }
            self.record_server(i, |x| *x = p.clone());
        }
        None
    }

    /// Stops the plan's own server if it runs, and records how.
    pub(super) async fn stop_server(&mut self) {
        let (Some(server), Some((i, _))) = (self.cfg.matrix.server.clone(), self.up.server.take())
        else {
            return;
        };
        let how = crate::fleet::server::stop(&self.up, &server).await;
        self.console.line(&format!("■ server stopped: {how}"));
        self.record_server(i, |p| p.stopped = how.clone());
    }

    /// Applies `f` to the recorded server process of every group of setting `index`.
    pub(super) fn record_server(&mut self, index: usize, f: impl Fn(&mut ServerProcess)) {
        for (g, info) in self.groups.iter().zip(self.manifest.groups.iter_mut()) {
            if g.setting == Some(index) {
                f(info.server.get_or_insert_with(ServerProcess::default));
            }
        }
    }

    /// A group's model load: how long its load request took, and what the server said of it,
    /// recorded apart from every level's TTFT.
    pub(super) fn note_load(&mut self, phase: &Phase, s: &CycleSummary) {
        let load_s = s.e2e.max_s;
        let server_s = s.server_account.as_ref().and_then(|a| a.model_load_max_s);
        if let Some(g) = self.manifest.groups.get_mut(phase.group) {
            g.load_s = load_s;
            g.server_load_s = server_s;
        }
        if s.failed > 0 {
            let note = format!(
                "loading {} failed ({}); its levels run anyway and will show the errors",
                phase.plan.model,
                if s.errors_by_kind.is_empty() {
                    "no answer"
                } else {
                    s.errors_by_kind.as_str()
                }
            );
            self.console.line(&format!("  warning: {note}"));
            self.manifest.notes.push(note);
        } else if let Some(t) = load_s {
            self.console.line(&format!(
                "  {} ready after {:.2} s{}",
                phase.plan.model,
                t,
                server_s.map_or(String::new(), |l| format!(
                    " (the server reports {l:.2} s of model load)"
                ))
            ));
        }
    }
}
