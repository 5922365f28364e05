//! A per-policy index of AuthorizationPolicy rules by the first segment of the paths they
//! can match, built when a snapshot is compiled: a request evaluates the rules that may
//! match its path (those for its first segment, and those that may match any path), not
//! every rule. It leaves out only rules that cannot match (`rule_path_segments` proves it),
//! so verdicts are those of the plain evaluation (a property test compares the two).

use ferry_model::authz::{first_path_segment, rule_path_segments, AuthzPolicy, AuthzRule};
use std::collections::HashMap;

/// Below this many rules a policy is evaluated whole: looking the path up costs more than
/// the rules it would skip.
const INDEX_MIN_RULES: usize = 6;

/// The index of one policy (None: evaluate every rule).
pub struct RuleIndex {
    /// Rules that may match any path, in order.
    always: Vec<u32>,
    /// Rules for paths whose first segment is the key.
    by_segment: HashMap<Box<str>, Vec<u32>>,
}

/// One entry per policy of the snapshot, in order.
pub fn build(policies: &[AuthzPolicy]) -> Vec<Option<RuleIndex>> {
    policies.iter().map(RuleIndex::build).collect()
}

impl RuleIndex {
    fn build(policy: &AuthzPolicy) -> Option<RuleIndex> {
        if policy.rules.len() < INDEX_MIN_RULES {
            return None;
        }
        let mut index = RuleIndex {
            always: Vec::new(),
            by_segment: HashMap::new(),
        };
        for (number, rule) in policy.rules.iter().enumerate() {
            let number = number as u32;
            match rule_path_segments(rule) {
                None => index.always.push(number),
                Some(segments) => {
                    for segment in segments {
                        let list = index.by_segment.entry(Box::from(&*segment)).or_default();
                        if list.last() != Some(&number) && !list.contains(&number) {
                            list.push(number);
                        }
                    }
                }
            }
        }
        Some(index)
    }
}

/// The rules of `policy` that may match a request for `path` (all of them without an index).
pub fn candidates<'p>(
    index: Option<&'p RuleIndex>,
    policy: &'p AuthzPolicy,
    path: &str,
) -> Candidates<'p> {
    match index {
        None => Candidates::All(policy.rules.iter()),
        Some(index) => {
            let by_segment = index
                .by_segment
                .get(first_path_segment(path))
                .map_or(&[][..], Vec::as_slice);
            Candidates::Indexed {
                rules: &policy.rules,
                numbers: index.always.iter().chain(by_segment.iter()),
            }
        }
    }
}

pub enum Candidates<'p> {
    All(std::slice::Iter<'p, AuthzRule>),
    Indexed {
        rules: &'p [AuthzRule],
        numbers: std::iter::Chain<std::slice::Iter<'p, u32>, std::slice::Iter<'p, u32>>,
    },
}

impl<'p> Iterator for Candidates<'p> {
    type Item = &'p AuthzRule;

    fn next(&mut self) -> Option<&'p AuthzRule> {
        match self {
            Candidates::All(rules) => rules.next(),
            Candidates::Indexed { rules, numbers } => numbers.next().map(|n| &rules[*n as usize]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::authz::{
        authorize, authorize_with, AuthzAction, AuthzRequest, Operation, Values,
    };
    use ferry_model::Meta;
    use proptest::prelude::*;

    fn rule(paths: Vec<String>, methods: Vec<String>) -> AuthzRule {
        AuthzRule {
            to: vec![Operation {
                paths: Values {
                    any: paths.into_iter().map(Into::into).collect(),
                    none: Vec::new(),
                },
                methods: Values {
                    any: methods.into_iter().map(Into::into).collect(),
                    none: Vec::new(),
                },
                ..Operation::default()
            }],
            ..AuthzRule::default()
        }
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            "/(a|b|api)(/(x|y))?".prop_map(|p| p),
            "/(a|b|api)/".prop_map(|p| format!("{p}*")),
            "/(a|ap)".prop_map(|p| format!("{p}*")),
            "(x|/y)".prop_map(|p| format!("*{p}")),
            Just("*".to_string()),
            Just("/".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn the_index_gives_the_verdicts_of_the_whole_evaluation(
            rules in proptest::collection::vec((proptest::collection::vec(pattern(), 0..3), any::<bool>()), 6..14),
            deny in any::<bool>(),
            path in "/(a|b|api|c)?(/(x|y))?(/z)?",
            method in "(GET|POST)",
        ) {
            let policy = AuthzPolicy {
                meta: Meta::new("AuthorizationPolicy", "ns", "p"),
                action: if deny { AuthzAction::Deny } else { AuthzAction::Allow },
                selector: None,
                mesh_wide: false,
                rules: rules.into_iter().map(|(paths, get)| rule(paths, if get { vec!["GET".into()] } else { vec![] })).collect(),
                listener_ports: Vec::new(),
                provider: None,
            };
            let index = build(std::slice::from_ref(&policy));
            let request = AuthzRequest {
                principal: None, source_ip: None, remote_ip: &|| None, destination_ip: None,
                destination_port: 80, host: "h", method: &method, path: &path,
                header: &|_| None, auth: None, sni: None, http: true,
            };
            let whole = authorize([&policy], &request);
            let indexed = authorize_with([(0, &policy)], &request, |i, p| candidates(index[i].as_ref(), p, &path));
            prop_assert_eq!(whole, indexed);
        }
    }
}
