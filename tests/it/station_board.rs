//! On a board only: the PASS, FAIL, READY, BUSY and RESULT-VALID lines through the Linux GPIO
//! character device (this development machine's kernel has no GPIO device or simulator). Run on
//! the board with the chip and the five output line offsets, with nothing else driving those
//! lines:
//!
//! ```sh
//! CLIPADA_GPIO_CHIP=/dev/gpiochip0 CLIPADA_GPIO_LINES=17,27,22,23,24 \
//!     cargo test --test it station_board -- --ignored
//! ```
//!
//! (On a Jetson the offsets of the 40-pin header are in board/<profile>.toml.)

#[cfg(all(feature = "gpio", target_os = "linux"))]
#[test]
#[ignore = "needs a GPIO chip: see the file's doc comment"]
fn chardev_lines_follow_the_verdicts_and_end_in_the_safe_state() {
    use std::time::Duration;

    use std::time::Instant;

    use clipada::station::lines::chardev::ChardevLine;
    use clipada::station::lines::{Handshake, LineSettings, Output, OutputMode, SafeState, VerdictLines};
    use clipada::verdict::Verdict;
    use embedded_hal::digital::InputPin;

    let chip = std::path::PathBuf::from(std::env::var("CLIPADA_GPIO_CHIP").expect("CLIPADA_GPIO_CHIP"));
    let offsets: Vec<u32> = std::env::var("CLIPADA_GPIO_LINES")
        .expect("CLIPADA_GPIO_LINES=pass,fail,ready,busy,valid")
        .split(',')
        .map(|s| s.trim().parse().expect("line offsets"))
        .collect();
    // Requested at the safe state's levels: PASS low, FAIL high, READY low, BUSY high, VALID low.
    let outputs: [Output; 5] =
        std::array::from_fn(|i| Box::new(ChardevLine::output(&chip, offsets[i], i == 1 || i == 3).unwrap()) as Output);
    let settings = LineSettings {
        active_low: false,
        mode: OutputMode::Level,
        pulse: Duration::from_millis(50),
        safe: SafeState::default(),
        handshake: Handshake { settle: Duration::from_millis(2), valid: Duration::from_millis(20) },
    };
    let mut lines = VerdictLines::new(outputs, settings);
    lines.enter_safe_state().unwrap();
    lines.request(Verdict::Pass, Instant::now()).unwrap();
    lines.request(Verdict::Fail, Instant::now()).unwrap();
    drop(lines);
    // Released lines keep their last value on most chips: read them back as inputs.
    let levels: Vec<bool> = offsets.iter().map(|o| ChardevLine::input(&chip, *o).unwrap().is_high().unwrap()).collect();
    assert_eq!(levels, [false, true, false, true, false], "the safe state after drop");
}
