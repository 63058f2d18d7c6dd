//! Recipes: several products in one station (`[[recipe]]`), each judged with its own model,
//! memory, region, ignore mask, threshold and reject-gate distance. Every configured recipe is
//! loaded at start (recipes with the same model share its engine), so switching costs nothing
//! and never stalls the line.
//!
//! A part's recipe is chosen once, when its trigger is taken ([`Recipes::choose`]): the number
//! on the select inputs (binary-coded GPIO lines, read at the trigger), else the active recipe,
//! which the control socket may switch (the switch takes effect at the next part). Everything
//! that part goes through (region, judge, threshold, gate distance, record) comes from that one
//! [`Recipe`]: a part is never judged with a mix of two.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::lines::GpioError;
use super::log::Provenance;
use super::monitor::{DriftChange, DriftWatch};
use super::reject::Slot;
use super::Roi;
use crate::pipeline::{Extractor, InspectError, Inspector, Judge, Judged, Memory, StageTimes};
use crate::verdict::Verdict;

/// Longest recipe name.
pub const NAME_LEN: usize = 32;
/// A recipe's name, in fixed-capacity storage (it is copied into the display's status).
pub type RecipeName = heapless::String<NAME_LEN>;

/// One part judged with a recipe: the outcome, the recipe's tag, and a change of its drift
/// warning.
pub struct JudgedPart<'a> {
    /// The outcome.
    pub judged: Result<Judged<'a>, InspectError>,
    /// The recipe that judged it.
    pub tag: &'a RecipeTag,
    /// A change of the recipe's drift warning this part made.
    pub drift: Option<DriftChange>,
    /// How long each stage took.
    pub stages: StageTimes,
}

/// An image a recipe must judge a known way (the self-test).
pub struct Reference {
    /// Its file.
    pub path: PathBuf,
    /// The image, as the camera would give it.
    pub image: RgbImage,
    /// PASS for a good part, FAIL for a known defect.
    pub expected: Verdict,
}

/// What a recipe's records and screen say of it.
#[derive(Debug, Clone)]
pub struct RecipeTag {
    /// Its name.
    pub name: RecipeName,
    /// Its number: its place in the file, from 1 (0: no recipe).
    pub number: u16,
    /// What judges it.
    pub provenance: Provenance,
    /// Its decision threshold.
    pub threshold: f32,
}

/// One product, ready to judge.
pub struct Recipe {
    /// Its name, what judges it, its threshold.
    pub tag: RecipeTag,
    /// The select inputs' number for it.
    pub code: Option<u32>,
    /// The index of its engine among the station's.
    pub engine: usize,
    /// Its scorer and threshold.
    pub judge: Judge,
    /// Its judged rectangle; none: the whole frame.
    pub roi: Option<Roi>,
    /// Its gate distance; none: the gate's own (or no gate).
    pub slot: Option<Slot>,
    /// Its reference parts.
    pub references: Vec<Reference>,
    /// The watch on its passing parts' scores; none without calibration scores.
    pub drift: Option<DriftWatch>,
    /// Why its last self-test failed, until an operator acknowledges: its parts get ERROR.
    pub fault: Option<String>,
    /// Its memory's leave-one-out good scores (empty without a memory).
    pub good_scores: Vec<f32>,
}

/// Why a part has no recipe.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecipeError {
    /// The select inputs could not be read.
    #[error("recipe select: {0}")]
    Select(GpioError),
    /// The select inputs give a number no recipe has.
    #[error("recipe select: no recipe has code {0}")]
    Unknown(u32),
    /// The recipe's last self-test failed and was not acknowledged.
    #[error("recipe `{name}`: self-test failed: {why} (acknowledge with `clipada control --config … acknowledge`)")]
    Fault {
        /// The recipe.
        name: RecipeName,
        /// What failed.
        why: String,
    },
}

/// Reads the number on the recipe select inputs.
pub trait SelectInput: Send {
    /// The number now: bit i is input i's level.
    fn code(&mut self) -> Result<u32, GpioError>;
}

/// Select inputs played from a script (tests, dry runs with no hardware): lines of
/// `<milliseconds from start> <number>`, in order; `#` starts a comment. The number is 0 before
/// the first line; the clock starts at the first read.
pub struct ScriptedSelect {
    changes: Vec<(Duration, u32)>,
    started: Option<Instant>,
}

impl ScriptedSelect {
    /// Reads a script file: at most 1 MiB, times in order.
    pub fn read(path: &Path) -> Result<ScriptedSelect, GpioError> {
        let changes = super::trigger::read_script(path, "<number>", |field| field.parse().ok())?;
        Ok(ScriptedSelect { changes, started: None })
    }
}

impl SelectInput for ScriptedSelect {
    fn code(&mut self) -> Result<u32, GpioError> {
        let elapsed = self.started.get_or_insert_with(Instant::now).elapsed();
        Ok(self.changes.iter().take_while(|(at, _)| *at <= elapsed).last().map_or(0, |(_, code)| *code))
    }
}

/// The products of a station: the engines they share, the recipes, the active one and the
/// inputs that choose it.
pub struct Recipes {
    engines: Vec<Extractor>,
    list: Vec<Recipe>,
    active: usize,
    /// A switch asked for, and when: taken by the first part triggered after that.
    /// Switches asked for, oldest first (each a recipe's index and when it was asked for).
    pending: heapless::Deque<(usize, Instant), { super::status::RECIPE_REQUESTS }>,
    select: Option<Box<dyn SelectInput>>,
    unchosen: RecipeTag,
}

impl Recipes {
    /// `list` over `engines` (each recipe's `engine` an index into it), `active` first.
    pub fn new(
        engines: Vec<Extractor>,
        list: Vec<Recipe>,
        active: usize,
        select: Option<Box<dyn SelectInput>>,
    ) -> Recipes {
        assert!(!list.is_empty() && active < list.len(), "at least one recipe, the active one among them");
        assert!(list.iter().all(|r| r.engine < engines.len()), "every recipe has its engine");
        let unchosen = RecipeTag {
            name: RecipeName::try_from("none").expect("a short name"),
            number: 0,
            provenance: Provenance::default(),
            threshold: f32::NAN,
        };
        Recipes { engines, list, active, pending: heapless::Deque::new(), select, unchosen }
    }

    /// One recipe, `default`, judging with `inspector` over `roi`; `memory_sha256` for the
    /// records, `drift` its watch, if any.
    pub fn single(inspector: Inspector, roi: Option<Roi>, memory_sha256: Option<&str>) -> Recipes {
        let (extractor, judge) = inspector.into_parts();
        let tag = RecipeTag {
            name: RecipeName::try_from("default").expect("a short name"),
            number: 1,
            provenance: Provenance::of(&extractor, memory_sha256),
            threshold: judge.threshold().value(),
        };
        let recipe = Recipe {
            tag,
            code: None,
            engine: 0,
            judge,
            roi,
            slot: None,
            references: Vec::new(),
            drift: None,
            fault: None,
            good_scores: Vec::new(),
        };
        Recipes::new(vec![extractor], vec![recipe], 0, None)
    }

    /// The recipe for the part whose trigger, at `triggered`, was just taken: the select
    /// inputs' (read now: the station refuses queued triggers with select inputs, so the edge
    /// was a moment ago), else the active one after a switch asked for before `triggered`. Its
    /// index (none when the part has no recipe), and why it may not be judged (the part gets
    /// ERROR).
    pub fn choose(&mut self, triggered: Instant) -> (Option<usize>, Result<(), RecipeError>) {
        if let Some(select) = &mut self.select {
            let code = match select.code() {
                Ok(code) => code,
                Err(e) => return (None, Err(RecipeError::Select(e))),
            };
            match self.list.iter().position(|r| r.code == Some(code)) {
                Some(index) => self.active = index,
                None => return (None, Err(RecipeError::Unknown(code))),
            }
        } else {
            while let Some(&(index, _)) = self.pending.front().filter(|(_, asked)| *asked <= triggered) {
                self.active = index;
                self.pending.pop_front();
            }
        }
        let recipe = &self.list[self.active];
        let fault =
            recipe.fault.as_ref().map(|why| RecipeError::Fault { name: recipe.tag.name.clone(), why: why.clone() });
        (Some(self.active), fault.map_or(Ok(()), Err))
    }

    /// What the record of a part with no recipe says: recipe `none`, no threshold.
    pub fn unchosen(&self) -> &RecipeTag {
        &self.unchosen
    }

    /// Asks for `name` from the next part on: an error when no recipe has that name, or when the
    /// select inputs choose.
    pub fn switch_to(&mut self, name: &str) -> Result<(), String> {
        if self.select.is_some() {
            return Err("the recipe select inputs choose each part's recipe (`recipes.select_lines`)".into());
        }
        let index = self.list.iter().position(|r| r.tag.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.list.iter().map(|r| r.tag.name.as_str()).collect();
            format!("no recipe is named `{name}` (there are: {})", names.join(", "))
        })?;
        // Parts triggered from now on: one that waits in the queue came before the request.
        self.switch_at(index, Instant::now());
        Ok(())
    }

    /// Recipe `index` for the parts triggered after `asked` (a request from the plant, checked
    /// there: [`Recipes::plant_choices`]); the oldest waiting switch is dropped when too many
    /// wait (a later one overrides it).
    pub fn switch_at(&mut self, index: usize, asked: Instant) {
        if index >= self.list.len() || self.select.is_some() {
            return;
        }
        super::status::push_dropping_oldest(&mut self.pending, (index, asked));
    }

    /// How many recipes the plant may choose from by number (none when the select inputs
    /// choose each part's).
    pub fn plant_choices(&self) -> Option<usize> {
        self.select.is_none().then_some(self.list.len())
    }

    /// Judges `image` with recipe `index`.
    pub fn judge(&mut self, index: usize, image: &RgbImage) -> Result<Judged<'_>, InspectError> {
        let recipe = &mut self.list[index];
        recipe.judge.inspect(&mut self.engines[recipe.engine], image)
    }

    /// Judges a part's `image` with recipe `index`, whose drift watch takes a PASS's score.
    pub fn judge_part(&mut self, index: usize, image: &RgbImage) -> JudgedPart<'_> {
        let recipe = &mut self.list[index];
        let engine = &mut self.engines[recipe.engine];
        let judged = recipe.judge.inspect(engine, image);
        let stages = engine.stage_times();
        let drift = match (&judged, &mut recipe.drift) {
            (Ok(j), Some(watch)) if j.verdict == Verdict::Pass => watch.observe(j.score),
            _ => None,
        };
        JudgedPart { judged, tag: &recipe.tag, drift, stages }
    }

    /// Judges recipe `index`'s parts against `memory` from now on, with `threshold` (none: the
    /// memory's calibrated one); its records name the new memory. Unchanged when refused (a
    /// memory made for another model, precision or scoring mode).
    pub fn replace_memory(&mut self, index: usize, memory: &Memory, threshold: Option<f32>) -> Result<(), String> {
        let recipe = &mut self.list[index];
        let engine = &self.engines[recipe.engine];
        recipe.judge.replace_memory(engine, memory, threshold).map_err(|e| e.to_string())?;
        recipe.tag.threshold = recipe.judge.threshold().value();
        recipe.tag.provenance = Provenance::of(engine, memory.sha256.as_deref());
        recipe.good_scores = memory.bank.good_scores.clone();
        recipe.drift = recipe.drift.as_ref().and_then(|w| w.recalibrated(&recipe.good_scores, recipe.tag.threshold));
        Ok(())
    }

    /// Recipe `index`.
    pub fn get(&self, index: usize) -> &Recipe {
        &self.list[index]
    }

    /// Recipe `index`, to change.
    pub fn get_mut(&mut self, index: usize) -> &mut Recipe {
        &mut self.list[index]
    }

    /// The index of the active recipe (the next part's, unless a switch is pending or the select
    /// inputs choose another).
    pub fn active(&self) -> usize {
        self.active
    }

    /// The recipe the next part gets, as far as is known now.
    pub fn next_tag(&self) -> &RecipeTag {
        &self.list[self.pending.back().map_or(self.active, |(index, _)| *index)].tag
    }

    /// Whether a recipe's failed self-test waits for an operator.
    pub fn faulted(&self) -> bool {
        self.list.iter().any(|r| r.fault.is_some())
    }

    /// How many recipes.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Always false: a station has at least one recipe.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The engine of recipe `index`.
    pub fn engine(&self, index: usize) -> &Extractor {
        &self.engines[self.list[index].engine]
    }
}
