//! A cycle made ready before it starts: its targets parsed and every request body built, so
//! the hot path only clones a reference-counted buffer.

use crate::backend;
use crate::targets::Targets;
use bytes::Bytes;
use tokengun_common::CyclePlan;

/// A cycle could not even begin (the plan was unusable on this agent).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot build a request for {url}: {reason}")]
    Request { url: String, reason: String },
}

/// A cycle whose requests are built and ready to fire.
pub struct PreparedCycle {
    pub(super) plan: CyclePlan,
    pub(super) targets: Targets,
    pub(super) bodies: Vec<Bytes>,
}

impl PreparedCycle {
    /// Builds the request bodies every worker of the cycle will send (one per prompt), so the
    /// hot path only clones a reference-counted buffer.
    pub fn new(plan: CyclePlan) -> Result<Self, EngineError> {
        let targets = Targets::new(&plan, plan.api.path())
            .map_err(|(url, reason)| EngineError::Request { url, reason })?;
        let url = targets.uri(0).to_string();
        let bad = |reason: String| EngineError::Request {
            url: url.clone(),
            reason,
        };
        let bodies = plan
            .prompts
            .iter()
            .map(|p| backend::request_body(&plan, p).map(Bytes::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            plan,
            targets,
            bodies,
        })
    }

    /// The plan this cycle runs.
    pub fn plan(&self) -> &CyclePlan {
        &self.plan
    }
}
