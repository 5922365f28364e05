//! What the translator has to say about each object: status conditions and problems.

use ferry_model::Meta;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A condition that holds (e.g. Accepted=True).
    Info,
    /// The object is served, degraded (e.g. an unresolved backend answers 500).
    Warning,
    /// The object is invalid; standalone mode rejects the whole change and keeps the last good one.
    Error,
}

/// One condition on one object (and, for routes, one parent).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Report {
    pub object: Meta,
    /// For routes: the parent (Gateway / listener) the condition is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The field the problem is in, as a path from the object root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Condition type: Accepted, ResolvedRefs, Programmed...
    pub condition: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    pub severity: Severity,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.object)?;
        if let Some(field) = &self.field {
            write!(f, " field `{field}`")?;
        }
        if let Some(parent) = &self.parent {
            write!(f, " (parent {parent})")?;
        }
        write!(
            f,
            ": {}={} {}: {}",
            self.condition, self.status, self.reason, self.message
        )
    }
}

/// Collects reports while translating.
#[derive(Default)]
pub struct Reports(Vec<Report>);

/// Builder for one report; `Reports::push` finishes it.
pub struct Condition {
    pub condition: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    pub severity: Severity,
    pub parent: Option<String>,
    pub field: Option<String>,
}

impl Condition {
    pub fn ok(condition: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(condition, true, reason, message, Severity::Info)
    }

    pub fn warn(condition: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(condition, false, reason, message, Severity::Warning)
    }

    pub fn error(
        condition: &'static str,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::new(condition, false, reason, message, Severity::Error)
    }

    fn new(
        condition: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
        severity: Severity,
    ) -> Self {
        Condition {
            condition,
            status,
            reason,
            message: message.into(),
            severity,
            parent: None,
            field: None,
        }
    }

    pub fn parent(mut self, parent: impl Into<String>) -> Self {
        self.parent = Some(parent.into());
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl Reports {
    pub fn push(&mut self, object: &Meta, c: Condition) {
        self.0.push(Report {
            object: object.clone(),
            parent: c.parent,
            field: c.field,
            condition: c.condition,
            status: c.status,
            reason: c.reason,
            message: c.message,
            severity: c.severity,
        });
    }

    pub fn into_sorted(mut self) -> Vec<Report> {
        self.0.sort();
        self.0.dedup();
        self.0
    }
}
