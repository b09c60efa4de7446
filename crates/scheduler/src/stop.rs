//! Stop strings matched across token boundaries: text that could still turn out to be the start
//! of a stop string is held back, so no part of a stop string is ever streamed.

/// Where the text of one choice stands against its stop strings.
#[derive(Debug, Clone)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet released: a suffix that may begin a stop string.
    held: String,
}

/// The result of feeding a delta.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StopCheck {
    /// Text that is safe to release now (may be empty).
    Continue(String),
    /// A stop string was found: the text before it, which ends the choice.
    Stopped(String),
}

impl StopMatcher {
    pub(crate) fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub(crate) fn push(&mut self, delta: &str) -> StopCheck {
        if self.stops.is_empty() {
            return StopCheck::Continue(delta.to_string());
        }
        self.held.push_str(delta);
        // The earliest stop string wins, as if the text had been scanned left to right.
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = found {
            let before = self.held[..at].to_string();
            self.held.clear();
            return StopCheck::Stopped(before);
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_string();
        self.held.drain(..keep);
        StopCheck::Continue(out)
    }

    /// The held text, released because the choice ended for another reason.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for d in deltas {
            match m.push(d) {
                StopCheck::Continue(t) => out.push_str(&t),
                StopCheck::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn a_stop_split_over_tokens_is_caught_and_never_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abc E"), StopCheck::Continue("abc ".into()));
        assert_eq!(m.push("N"), StopCheck::Continue(String::new()));
        assert_eq!(m.push("Dxyz"), StopCheck::Stopped(String::new()));
        assert_eq!(
            feed(&["END"], &["abc E", "N", "Dxyz"]),
            ("abc ".into(), true)
        );
    }

    #[test]
    fn a_false_start_is_released() {
        assert_eq!(feed(&["END"], &["E", "N", "d!"]), ("ENd!".into(), false));
        assert_eq!(feed(&["END"], &["xE"]), ("xE".into(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(feed(&["b", "a"], &["xyab"]), ("xy".into(), true));
        assert_eq!(
            feed(&["\n\n", "."], &["Hi", ".", "\n\n"]),
            ("Hi".into(), true)
        );
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        assert_eq!(feed(&["éé"], &["aé", "b"]), ("aéb".into(), false));
        assert_eq!(feed(&["éé"], &["aé", "é"]), ("a".into(), true));
    }

    #[test]
    fn no_stops_passes_everything_through() {
        assert_eq!(feed(&[], &["a", "b"]), ("ab".into(), false));
    }
}
