//! The ids of records that are shown as numbers. (An incident's,
//! `INC-0042`, is [`crate::incident::IncidentId`].)

use std::fmt;

use serde::{Deserialize, Serialize};

/// A run's id: the number the API, the CLI and the timeline show
/// (`/api/v1/runs/7`, "run #7").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
