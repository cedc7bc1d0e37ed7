//! How an error is told to a person: its message and its causes on one
//! line, each cause once. Many of our errors quote their source in their own
//! message, so printing the chain as is (anyhow's `{:#}`) would repeat it.

/// `what: why: root cause`, leaving out a cause whose text the line
/// already holds.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[test]
    fn causes_already_quoted_are_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read config file /c.yaml: {source}")]
        struct Read {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Read {
            source: std::io::Error::other("permission denied"),
        });
        assert_eq!(
            chain(e.as_ref()),
            "cannot read config file /c.yaml: permission denied"
        );
        let e = anyhow::Error::new(std::io::Error::other("disk on fire")).context("saving the run");
        assert_eq!(chain(e.as_ref()), "saving the run: disk on fire");
    }
}
