//! The Modbus TCP server (`[modbus]`): the station's last result, counters and state as input
//! registers, a trigger coil and a recipe-select holding register for the PLC. The register
//! map is [`InputRegister`] and the constants below, and the README's table.
//!
//! Frames are decoded and answered by `rmodbus` (a codec); the server loop is ours: a thread
//! accepts connections, at most `max_clients` served at once (a new one disconnects the client
//! silent the longest), each served by a thread of its own that reads whole MBAP frames,
//! disconnects a client that completes no request for `idle_timeout_ms` or trickles one frame
//! over more than a second, answers one request per 2 ms at most, and answers what it cannot
//! do with a Modbus exception (unknown function 01, address 02, value 03, busy 06). A frame
//! whose header is broken closes the connection (the stream cannot be resynchronised). Every
//! read is answered from one copy of the board's status, so the registers of one request
//! always belong to one result. The trigger coil takes one part at a time: it reads ON from
//! the trigger until that part's result is out, and a trigger meanwhile (or while the station
//! is not ready or is judging) is answered busy (06), never turned into a missed trigger.

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rmodbus::consts::ModbusFunction;
use rmodbus::server::{ModbusFrame, Read as FrameRead, Write as FrameWrite};
use rmodbus::{ErrorKind, ModbusProto};

use super::{ModbusSettings, RecipeChoices};
use crate::station::status::{lock, StationStatus, StatusBoard};
use crate::station::trigger::RemoteTrigger;
use crate::verdict::Verdict;

/// The input registers (function 4), one 16-bit word each; 32-bit values take two, the high
/// word first. Holding registers from [`HOLDING_MIRROR`] repeat them for PLCs that read only
/// holding registers (function 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum InputRegister {
    /// Results since start (u32): it moves with every result, so each new one is seen.
    Sequence = 0,
    /// The last verdict: 0 none yet, 1 PASS, 2 FAIL, 3 ERROR.
    Verdict = 2,
    /// Why the last result is ERROR (0: it is not; the README's table).
    ErrorCause = 3,
    /// The last part's ID (u32, its low 32 bits; 0 when the station keeps none).
    PartId = 4,
    /// The last score × 1000 (i32, rounded; i32::MIN when it has none).
    Score = 6,
    /// The last result's threshold × 1000 (i32; i32::MIN when it had no recipe).
    Threshold = 8,
    /// The last result's recipe (1-based place in the file; 0: none).
    ResultRecipe = 10,
    /// The last result's trigger-to-verdict latency, ms (saturates at 65535).
    LatencyMs = 11,
    /// State bits: 0 ready, 1 busy, 2 self-test failed (waits for an operator), 3 drift warning.
    State = 12,
    /// The recipe the next part gets (1-based).
    NextRecipe = 13,
    /// Parts since start (u32).
    Parts = 14,
    /// PASS verdicts (u32).
    Passed = 16,
    /// FAIL verdicts (u32).
    Failed = 18,
    /// ERROR verdicts (u32).
    Errors = 20,
    /// Missed triggers (u32).
    MissedTriggers = 22,
    /// Results dropped from the MQTT queue (u32).
    MqttDropped = 24,
}

/// How many input registers there are.
pub const INPUT_REGISTERS: u16 = 26;
/// The first holding register of the copy of the input registers.
pub const HOLDING_MIRROR: u16 = 100;
/// Coil 0: writing ON triggers one inspection (with `trigger.mode = "modbus"`); it reads ON
/// until that part's result is out.
pub const TRIGGER_COIL: u16 = 0;
/// Holding register 0: writing a recipe's number (1-based place in the file) selects it from
/// the next part triggered on; it reads the next part's recipe.
pub const RECIPE_REGISTER: u16 = 0;
/// Discrete inputs 0 to 3: the state bits of [`InputRegister::State`].
pub const DISCRETE_INPUTS: u16 = 4;

/// Longest MBAP length field (unit, function and data) the protocol allows.
const MAX_PDU: usize = 254;
/// How often a client's thread checks the stop flag while its client is silent.
const POLL: Duration = Duration::from_millis(50);
/// How long a response may take to be written before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A frame begun must be whole within this (a client trickling bytes is dropped).
const FRAME_DEADLINE: Duration = Duration::from_secs(1);
/// The shortest time between two answers to one client (500 requests a second at most).
const REQUEST_GAP: Duration = Duration::from_millis(2);

/// The input registers of `status`.
pub fn input_registers(status: &StationStatus) -> [u16; INPUT_REGISTERS as usize] {
    let mut words = [0u16; INPUT_REGISTERS as usize];
    let mut put32 = |at: InputRegister, value: u32| {
        words[at as usize] = (value >> 16) as u16;
        words[at as usize + 1] = value as u16;
    };
    let counters = &status.counters;
    let low32 = |value: u64| value as u32;
    put32(InputRegister::Sequence, low32(status.sequence));
    put32(InputRegister::Parts, low32(counters.frames));
    put32(InputRegister::Passed, low32(counters.passed));
    put32(InputRegister::Failed, low32(counters.failed));
    put32(InputRegister::Errors, low32(counters.errors));
    put32(InputRegister::MissedTriggers, low32(counters.missed_triggers));
    put32(InputRegister::MqttDropped, low32(counters.mqtt_dropped));
    if let Some(last) = &status.last {
        put32(InputRegister::PartId, last.part_id.map_or(0, low32));
        put32(InputRegister::Score, scaled(last.score) as u32);
        put32(InputRegister::Threshold, scaled(Some(last.threshold)) as u32);
        words[InputRegister::Verdict as usize] = match last.verdict {
            Verdict::Pass => 1,
            Verdict::Fail => 2,
            Verdict::Error => 3,
        };
        words[InputRegister::ErrorCause as usize] = last.cause as u16;
        words[InputRegister::ResultRecipe as usize] = last.recipe;
        words[InputRegister::LatencyMs as usize] = last.latency_ms.clamp(0.0, 65535.0) as u16;
    } else {
        put32(InputRegister::Score, i32::MIN as u32);
        put32(InputRegister::Threshold, i32::MIN as u32);
    }
    words[InputRegister::State as usize] = state_bits(status);
    words[InputRegister::NextRecipe as usize] = status.recipe;
    words
}

/// A score × 1000 as the registers hold it: rounded, clamped, `i32::MIN` for none or NaN.
pub fn scaled(score: Option<f32>) -> i32 {
    match score {
        Some(s) if s.is_finite() => (f64::from(s) * 1000.0).round().clamp(-(i32::MAX as f64), i32::MAX as f64) as i32,
        _ => i32::MIN,
    }
}

fn state_bits(status: &StationStatus) -> u16 {
    u16::from(status.ready)
        | u16::from(status.busy) << 1
        | u16::from(status.self_test_fault) << 2
        | u16::from(status.drift_warning) << 3
}

/// What a client's requests reach: the board, the trigger and the recipe choices.
struct Registers {
    board: Arc<StatusBoard>,
    trigger: Option<RemoteTrigger>,
    choices: RecipeChoices,
    /// The result sequence number when the last trigger was taken: the coil reads ON, and
    /// takes no other trigger, until a result after it is out.
    triggered_at: std::sync::Mutex<Option<u64>>,
}

impl Registers {
    /// Whether a trigger taken from the coil at `triggered_at` still waits for its result.
    fn trigger_pending(triggered_at: Option<u64>, status: &StationStatus) -> bool {
        triggered_at.is_some_and(|at| status.sequence <= at)
    }

    /// Fills the read that `function` asks for from one copy of the status.
    fn read(&self, function: ModbusFunction, read: FrameRead<'_>) -> Result<(), ErrorKind> {
        let status = self.board.status();
        let (address, count) = match &read {
            FrameRead::Words(w) => (w.address, w.count),
            FrameRead::Bits(b) => (b.address, b.count),
        };
        if count == 0 {
            return Err(ErrorKind::IllegalDataValue);
        }
        let addresses = address..address.checked_add(count).ok_or(ErrorKind::IllegalDataAddress)?;
        match read {
            FrameRead::Words(words) => {
                let inputs = input_registers(&status);
                for (i, address) in addresses.enumerate() {
                    let value = match (function, address) {
                        (ModbusFunction::GetInputs, a) if a < INPUT_REGISTERS => inputs[a as usize],
                        (ModbusFunction::GetHoldings, RECIPE_REGISTER) => status.recipe,
                        (ModbusFunction::GetHoldings, a)
                            if (HOLDING_MIRROR..HOLDING_MIRROR + INPUT_REGISTERS).contains(&a) =>
                        {
                            inputs[(a - HOLDING_MIRROR) as usize]
                        }
                        _ => return Err(ErrorKind::IllegalDataAddress),
                    };
                    if let Some(word) = words.buf.get_mut(2 * i..2 * i + 2) {
                        word.copy_from_slice(&value.to_be_bytes());
                    }
                }
            }
            FrameRead::Bits(bits) => {
                let state = state_bits(&status);
                for (i, address) in addresses.enumerate() {
                    let on = match (function, address) {
                        (ModbusFunction::GetCoils, TRIGGER_COIL) => {
                            Registers::trigger_pending(*lock(&self.triggered_at), &status)
                        }
                        (ModbusFunction::GetDiscretes, a) if a < DISCRETE_INPUTS => state >> a & 1 == 1,
                        _ => return Err(ErrorKind::IllegalDataAddress),
                    };
                    bits.buf[i / 8] |= u8::from(on) << (i % 8);
                }
            }
        }
        Ok(())
    }

    /// Carries out a write: the trigger coil or the recipe register.
    fn write(&self, write: FrameWrite<'_>) -> Result<(), ErrorKind> {
        match write {
            FrameWrite::Bits(bits) => {
                if bits.address != TRIGGER_COIL || bits.count != 1 {
                    return Err(ErrorKind::IllegalDataAddress);
                }
                // OFF does nothing: the coil falls by itself when its part's result is out.
                if bits.data.first().is_none_or(|b| b & 1 == 0) {
                    return Ok(());
                }
                let trigger = self.trigger.as_ref().ok_or(ErrorKind::IllegalDataAddress)?;
                // One part at a time: a trigger while the station is not ready, is judging,
                // or has not put out the last coil trigger's result is refused (busy, 06), so
                // the PLC knows it was not taken and never gets a missed-trigger ERROR for it.
                let mut triggered_at = lock(&self.triggered_at);
                let status = self.board.status();
                if !status.ready || status.busy || Registers::trigger_pending(*triggered_at, &status) {
                    return Err(ErrorKind::SlaveDeviceBusy);
                }
                trigger.try_send(Instant::now()).map_err(|_| ErrorKind::SlaveDeviceBusy)?;
                *triggered_at = Some(status.sequence);
                Ok(())
            }
            FrameWrite::Words(words) => {
                if words.address != RECIPE_REGISTER || words.count != 1 || words.data.len() != 2 {
                    return Err(ErrorKind::IllegalDataAddress);
                }
                let count = self.choices.0.ok_or(ErrorKind::IllegalDataAddress)?;
                let number = usize::from(u16::from_be_bytes([words.data[0], words.data[1]]));
                if !(1..=count).contains(&number) {
                    return Err(ErrorKind::IllegalDataValue);
                }
                self.board.request_recipe(number - 1, Instant::now());
                Ok(())
            }
        }
    }

    /// The response to one whole request frame (MBAP header included) in `response`; false
    /// when there is none to send (a frame for no unit).
    fn answer(&self, request: &[u8], response: &mut Vec<u8>) -> bool {
        // Every unit ID is this station's (a gateway's unit 255 or 1 alike): no broadcasts.
        let unit = request.get(6).copied().unwrap_or(0);
        // A function this server does not know is answered 01 whatever its length (the codec
        // would call a short one broken).
        if request.get(7).is_none_or(|&code| ModbusFunction::try_from(code).is_err()) {
            exception(request, ErrorKind::IllegalFunction, response);
            return true;
        }
        if !bulk_write_consistent(request) {
            exception(request, ErrorKind::IllegalDataValue, response);
            return true;
        }
        let mut frame = ModbusFrame::new(unit, request, ModbusProto::TcpUdp, response).with_broadcast_units(&[]);
        if frame.parse().is_err() {
            // A sound header around a broken PDU: answered, the stream stays in step.
            response.clear();
            exception(request, ErrorKind::IllegalDataValue, response);
            return true;
        }
        if frame.processing_required {
            let function = frame.func;
            let outcome = if frame.readonly {
                let read = frame.get_external_read();
                let result = read.and_then(|read| self.read(function, read));
                frame.process_external_read(result)
            } else {
                let write = frame.get_external_write();
                let result = write.and_then(|write| self.write(write));
                frame.process_external_write(result)
            };
            if outcome.is_err() {
                response.clear();
                exception(request, ErrorKind::SlaveDeviceFailure, response);
                return true;
            }
        }
        frame.response_required && frame.finalize_response().is_ok()
    }
}

/// Whether a write of several coils (15) or registers (16) is whole: a count within the
/// protocol's bounds, the byte count that count needs, and exactly that many data bytes
/// (other functions: true). The codec trusts the byte count, so this is checked first.
fn bulk_write_consistent(request: &[u8]) -> bool {
    let (function, pdu) = (request[7], &request[8..]);
    let (max_count, bytes_for): (u16, fn(u16) -> usize) = match function {
        15 => (1968, |count| usize::from(count).div_ceil(8)),
        16 => (123, |count| 2 * usize::from(count)),
        _ => return true,
    };
    let [_, _, count_high, count_low, byte_count, data @ ..] = pdu else { return false };
    let count = u16::from_be_bytes([*count_high, *count_low]);
    (1..=max_count).contains(&count) && usize::from(*byte_count) == bytes_for(count) && data.len() == bytes_for(count)
}

/// An exception response to `request` (its header echoed).
fn exception(request: &[u8], error: ErrorKind, response: &mut Vec<u8>) {
    let code = match error {
        ErrorKind::IllegalFunction => 1,
        ErrorKind::IllegalDataAddress => 2,
        ErrorKind::IllegalDataValue => 3,
        ErrorKind::SlaveDeviceBusy => 6,
        _ => 4,
    };
    let byte = |at: usize| request.get(at).copied().unwrap_or(0);
    response.extend_from_slice(&[byte(0), byte(1), byte(2), byte(3), 0, 3, byte(6), byte(7) | 0x80, code]);
}

/// The running server: its listening thread, which serves each client on a thread of its own;
/// stopped (and every client disconnected) when dropped.
pub struct ModbusServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ModbusServer {
    /// Listens on `settings.bind`; requests read `board`, the trigger coil sends to `trigger`
    /// (none: the coil is not writable), the recipe register selects among `choices`.
    pub fn start(
        settings: &ModbusSettings,
        board: Arc<StatusBoard>,
        trigger: Option<RemoteTrigger>,
        choices: RecipeChoices,
    ) -> anyhow::Result<ModbusServer> {
        let listener = TcpListener::bind(&settings.bind).map_err(|e| {
            let hint = if e.kind() == IoErrorKind::PermissionDenied {
                " (a port below 1024 needs CAP_NET_BIND_SERVICE, which the service's network drop-in grants)"
            } else {
                ""
            };
            anyhow::anyhow!("modbus.bind: cannot listen on {}: {e}{hint}", settings.bind)
        })?;
        listener.set_nonblocking(true).context("modbus: listening socket")?;
        let address = listener.local_addr().context("modbus: listening socket")?;
        let stop = Arc::new(AtomicBool::new(false));
        let registers = Arc::new(Registers { board, trigger, choices, triggered_at: Default::default() });
        let (limit, idle, theirs) = (settings.max_clients, settings.idle_timeout, stop.clone());
        let thread = std::thread::Builder::new()
            .name("modbus".into())
            .spawn(move || accept(&listener, &registers, limit, idle, &theirs))
            .context("modbus: cannot start its thread")?;
        tracing::info!("modbus: listening on {address}");
        Ok(ModbusServer { address, stop, thread: Some(thread) })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for ModbusServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A connected client, as the listening thread keeps it.
struct Client {
    thread: JoinHandle<()>,
    /// Set to disconnect it (to make room for a new client).
    evict: Arc<AtomicBool>,
    /// When it last completed a request, ms since the server started, with [`SERVED`] set;
    /// until its first, when it connected, without.
    heard_ms: Arc<AtomicU64>,
}

/// Marks a [`Client`]'s `heard_ms` once it has completed a request.
const SERVED: u64 = 1 << 63;

/// Accepts clients until stopped. At most `limit` are served: when a new one comes, a client
/// is disconnected to make room (a PLC that lost its link and reconnects must not find its own
/// dead connections holding every place): the one connected the longest without completing a
/// request, else the one silent the longest (a burst of new connections never displaces a
/// client that is polling while one of them still waits for its first request).
fn accept(listener: &TcpListener, registers: &Arc<Registers>, limit: usize, idle: Duration, stop: &Arc<AtomicBool>) {
    let started = Instant::now();
    let mut clients: Vec<Client> = Vec::new();
    let mut evicted = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // A client's thread that ended in any way (a panic included) frees its place.
        clients.retain(|c| !c.thread.is_finished());
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == IoErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                tracing::warn!("modbus: accept: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let live: Vec<&Client> = clients.iter().filter(|c| !c.evict.load(Ordering::Relaxed)).collect();
        if live.len() >= limit {
            if let Some(quietest) = live.iter().min_by_key(|c| c.heard_ms.load(Ordering::Relaxed)) {
                quietest.evict.store(true, Ordering::Relaxed);
                evicted += 1;
                if evicted.is_power_of_two() {
                    tracing::warn!("modbus: {limit} clients already (`modbus.max_clients`): the one silent the longest disconnected for {peer} ({evicted} so far)");
                }
            }
        }
        let evict = Arc::new(AtomicBool::new(false));
        let heard_ms = Arc::new(AtomicU64::new(started.elapsed().as_millis() as u64));
        let (registers, stop, theirs_evict, theirs_heard) =
            (registers.clone(), stop.clone(), evict.clone(), heard_ms.clone());
        let spawned = std::thread::Builder::new().name("modbus-client".into()).spawn(move || {
            let heard = Heard { started, ms: &theirs_heard };
            match serve(stream, &registers, idle, &heard, &[&stop, &theirs_evict]) {
                Ok(()) => tracing::debug!("modbus: {peer} disconnected"),
                Err(why) => tracing::info!("modbus: {peer} disconnected: {why}"),
            }
        });
        match spawned {
            Ok(thread) => clients.push(Client { thread, evict, heard_ms }),
            Err(e) => tracing::warn!("modbus: {peer} refused: cannot start its thread: {e}"),
        }
    }
    for client in clients {
        let _ = client.thread.join();
    }
}

/// Where a client's thread notes when its client last completed a request.
struct Heard<'a> {
    started: Instant,
    ms: &'a AtomicU64,
}

impl Heard<'_> {
    fn now(&self) {
        self.ms.store(SERVED | self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Serves one client until it leaves, completes no request for `idle`, takes longer than
/// [`FRAME_DEADLINE`] over one frame, breaks the framing, or one of `stops` is set; why it
/// ended, for the log. Requests are answered at most one per [`REQUEST_GAP`].
fn serve(
    mut stream: TcpStream,
    registers: &Registers,
    idle: Duration,
    heard: &Heard<'_>,
    stops: &[&AtomicBool],
) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(POLL)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut request = [0u8; 6 + MAX_PDU];
    let mut have = 0usize;
    let mut response = Vec::with_capacity(6 + MAX_PDU);
    let mut last_request = Instant::now();
    let mut frame_started = Instant::now();
    loop {
        // A whole frame: the 6-byte MBAP header says how much follows.
        let want = if have < 6 { 6 } else { 6 + usize::from(u16::from_be_bytes([request[4], request[5]])) };
        if have >= 6 {
            let length = want - 6;
            if u16::from_be_bytes([request[2], request[3]]) != 0 || !(2..=MAX_PDU).contains(&length) {
                return Err(format!(
                    "broken frame header (protocol {}, length {length})",
                    u16::from_be_bytes([request[2], request[3]])
                ));
            }
        }
        if have == want && have > 6 {
            // At most one request per REQUEST_GAP: a flood costs the client time, not the loop.
            std::thread::sleep(REQUEST_GAP.saturating_sub(last_request.elapsed()));
            response.clear();
            let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                registers.answer(&request[..have], &mut response)
            }));
            let Ok(send) = answered else {
                response.clear();
                exception(&request[..have], ErrorKind::SlaveDeviceFailure, &mut response);
                let _ = stream.write_all(&response);
                return Err("a request the server could not handle (answered 04)".into());
            };
            if send {
                stream.write_all(&response).map_err(|e| format!("write: {e}"))?;
            }
            have = 0;
            last_request = Instant::now();
            heard.now();
            continue;
        }
        if stops.iter().any(|stop| stop.load(Ordering::Relaxed)) {
            return Ok(());
        }
        match stream.read(&mut request[have..want]) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if have == 0 {
                    frame_started = Instant::now();
                }
                have += n;
            }
            Err(e)
                if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut | IoErrorKind::Interrupted) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if have > 0 && frame_started.elapsed() >= FRAME_DEADLINE {
            return Err(format!("a frame not whole within {} ms", FRAME_DEADLINE.as_millis()));
        }
        if have == 0 && last_request.elapsed() >= idle {
            return Err(format!("no request for {} ms (`modbus.idle_timeout_ms`)", idle.as_millis()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::station::status::{ErrorCause, LastResult};
    use crate::station::trigger::{EdgeSource, InputEvent, RemoteInput};
    use crate::station::RunSummary;

    /// A server on a free loopback port with one client allowed and a 300 ms idle timeout.
    fn server(trigger: Option<RemoteTrigger>, recipes: Option<usize>) -> (ModbusServer, Arc<StatusBoard>) {
        server_for(1, trigger, recipes)
    }

    /// The same with `max_clients` clients.
    fn server_for(
        max_clients: usize,
        trigger: Option<RemoteTrigger>,
        recipes: Option<usize>,
    ) -> (ModbusServer, Arc<StatusBoard>) {
        let settings =
            ModbusSettings { bind: "127.0.0.1:0".into(), max_clients, idle_timeout: Duration::from_millis(300) };
        let board = Arc::new(StatusBoard::new(None, false));
        let server = ModbusServer::start(&settings, board.clone(), trigger, RecipeChoices(recipes)).unwrap();
        (server, board)
    }

    fn connect(server: &ModbusServer) -> TcpStream {
        let stream = TcpStream::connect(server.address()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        stream
    }

    /// Sends one request (function and data after an MBAP header for unit 1) and reads the
    /// whole response, header included.
    fn ask(stream: &mut TcpStream, pdu: &[u8]) -> Vec<u8> {
        let length = (pdu.len() + 1) as u16;
        let mut frame = vec![0x12, 0x34, 0, 0];
        frame.extend_from_slice(&length.to_be_bytes());
        frame.push(1);
        frame.extend_from_slice(pdu);
        stream.write_all(&frame).unwrap();
        let mut header = [0u8; 6];
        stream.read_exact(&mut header).unwrap();
        let mut rest = vec![0u8; usize::from(u16::from_be_bytes([header[4], header[5]]))];
        stream.read_exact(&mut rest).unwrap();
        assert_eq!(header[..4], [0x12, 0x34, 0, 0], "the transaction ID is echoed");
        [&header[..], &rest].concat()
    }

    /// The exception code of a response, or none when it is not one.
    fn exception_code(response: &[u8]) -> Option<u8> {
        (response[7] & 0x80 != 0).then(|| response[8])
    }

    /// Whether the server closed `stream` (within its read timeout).
    fn closed(stream: &mut TcpStream) -> bool {
        matches!(stream.read(&mut [0u8; 16]), Ok(0) | Err(_))
    }

    #[test]
    fn the_registers_hold_the_last_result_and_the_counters() {
        let (server, board) = server(None, None);
        let mut client = connect(&server);
        // Nothing judged yet: no verdict, no score, no threshold.
        let fresh = ask(&mut client, &[4, 0, 0, 0, INPUT_REGISTERS as u8]);
        assert_eq!(fresh[8], 2 * INPUT_REGISTERS as u8);
        let word_at = |response: &[u8], at: usize| u16::from_be_bytes([response[9 + 2 * at], response[10 + 2 * at]]);
        let word = |response: &[u8], at: InputRegister| word_at(response, at as usize);
        assert_eq!(word(&fresh, InputRegister::Verdict), 0);
        assert_eq!([InputRegister::Score, InputRegister::Threshold].map(|at| word(&fresh, at)), [0x8000, 0x8000]);

        let last = LastResult {
            verdict: Verdict::Error,
            score: Some(-1.2345),
            threshold: 2.5,
            part_id: Some(0x1_2345_6789),
            cause: ErrorCause::None,
            recipe: 2,
            latency_ms: 70_000.0,
            frame: 70_000,
            unix_ms: 0,
            stages_ms: [f32::NAN; 4],
        };
        let counters =
            RunSummary { frames: 70_000, passed: 3, failed: 4, errors: 5, missed_triggers: 6, ..RunSummary::default() };
        board.publish(last, counters, None);
        board.update(|s| (s.ready, s.busy, s.recipe) = (true, true, 2));
        let read = ask(&mut client, &[4, 0, 0, 0, INPUT_REGISTERS as u8]);
        let pair = |at: InputRegister| u32::from(word(&read, at)) << 16 | u32::from(word_at(&read, at as usize + 1));
        assert_eq!(pair(InputRegister::Sequence), 1);
        assert_eq!(word(&read, InputRegister::Verdict), 3);
        assert_eq!(pair(InputRegister::PartId), 0x2345_6789, "the part ID's low 32 bits");
        assert_eq!(pair(InputRegister::Score) as i32, -1235, "score × 1000, rounded");
        assert_eq!(pair(InputRegister::Threshold) as i32, 2500);
        assert_eq!(word(&read, InputRegister::ResultRecipe), 2);
        assert_eq!(word(&read, InputRegister::LatencyMs), 65535, "latency saturates");
        assert_eq!(word(&read, InputRegister::State), 0b11);
        assert_eq!(word(&read, InputRegister::NextRecipe), 2);
        assert_eq!(pair(InputRegister::Parts), 70_000, "a u32 beyond 16 bits");
        assert_eq!(
            [InputRegister::Passed, InputRegister::Failed, InputRegister::Errors, InputRegister::MissedTriggers]
                .map(pair),
            [3, 4, 5, 6]
        );
        // The holding mirror, the recipe register and the discrete inputs agree.
        let mirror = ask(&mut client, &[3, 0, HOLDING_MIRROR as u8, 0, INPUT_REGISTERS as u8]);
        assert_eq!(mirror[9..], read[9..]);
        assert_eq!(ask(&mut client, &[3, 0, 0, 0, 1])[9..], [0, 2]);
        assert_eq!(ask(&mut client, &[2, 0, 0, 0, DISCRETE_INPUTS as u8])[9..], [0b0011]);
        assert_eq!(ask(&mut client, &[1, 0, 0, 0, 1])[9..], [0], "the trigger coil reads OFF");
    }

    #[test]
    fn what_the_server_cannot_do_gets_the_modbus_exception_for_it() {
        let (server, _board) = server(None, Some(2));
        let mut client = connect(&server);
        assert_eq!(exception_code(&ask(&mut client, &[0x2B, 0x0E, 1, 0])), Some(1), "unknown function");
        assert_eq!(exception_code(&ask(&mut client, &[7])), Some(1), "unknown function");
        assert_eq!(exception_code(&ask(&mut client, &[4, 0, 25, 0, 2])), Some(2), "past the last input register");
        assert_eq!(exception_code(&ask(&mut client, &[3, 0, 1, 0, 1])), Some(2), "between recipe and mirror");
        assert_eq!(exception_code(&ask(&mut client, &[4, 0xFF, 0xFF, 0, 2])), Some(2), "addresses wrap");
        assert_eq!(
            exception_code(&ask(&mut client, &[4, 0, 0, 0, 0])).map(|c| c == 2 || c == 3),
            Some(true),
            "count 0"
        );
        assert_eq!(
            exception_code(&ask(&mut client, &[5, 0, 0, 0xFF, 0])),
            Some(2),
            "no trigger coil without modbus triggers"
        );
        assert_eq!(exception_code(&ask(&mut client, &[5, 0, 0, 0x12, 0x34])), Some(3), "a coil is 0xFF00 or 0");
        assert_eq!(exception_code(&ask(&mut client, &[6, 0, 0, 0, 3])), Some(3), "recipe 3 of 2");
        assert_eq!(exception_code(&ask(&mut client, &[6, 0, 0, 0, 0])), Some(3), "recipe 0");
        assert_eq!(exception_code(&ask(&mut client, &[6, 0, 7, 0, 1])), Some(2), "a read-only register");
        assert_eq!(exception_code(&ask(&mut client, &[4, 0, 0])), Some(3), "a truncated request");
        // After all of that the connection still answers.
        assert_eq!(exception_code(&ask(&mut client, &[4, 0, 0, 0, 1])), None);
    }

    #[test]
    fn the_plc_selects_a_recipe_and_triggers_one_part_at_a_time_through_registers() {
        let (trigger, mut input) = RemoteInput::new();
        let (server, board) = server(Some(trigger), Some(2));
        let mut client = connect(&server);
        let before = Instant::now();
        assert_eq!(ask(&mut client, &[6, 0, 0, 0, 2])[7..], [6, 0, 0, 0, 2], "write echoed");
        // Read back at once, before the loop has taken the request: the next part's recipe.
        assert_eq!(ask(&mut client, &[3, 0, 0, 0, 1])[9..], [0, 2]);
        let mut taken = Vec::new();
        board.take_recipe_requests(|(index, at)| taken.push((index, at >= before)));
        assert_eq!(taken, [(1, true)], "recipe 2 is index 1, asked after the write was sent");

        let trigger = [5, 0, 0, 0xFF, 0];
        assert_eq!(exception_code(&ask(&mut client, &trigger)), Some(6), "not ready yet: busy");
        board.update(|s| s.ready = true);
        assert_eq!(ask(&mut client, &trigger)[7..], trigger, "taken");
        match input.next(Duration::from_secs(1)).unwrap() {
            InputEvent::Change { change, .. } => assert!(change.high && change.at >= before),
            other => panic!("no trigger: {other:?}"),
        }
        let _falling = input.next(Duration::ZERO).unwrap();
        // Until that part's result is out the coil reads ON and takes no other trigger.
        assert_eq!(ask(&mut client, &[1, 0, 0, 0, 1])[9..], [1]);
        assert_eq!(exception_code(&ask(&mut client, &trigger)), Some(6), "its result is not out");
        board.update(|s| s.busy = true);
        let result = LastResult {
            verdict: Verdict::Pass,
            score: Some(0.1),
            threshold: 0.5,
            part_id: None,
            cause: ErrorCause::None,
            recipe: 2,
            latency_ms: 1.0,
            frame: 1,
            unix_ms: 0,
            stages_ms: [f32::NAN; 4],
        };
        board.publish(result, RunSummary::default(), None);
        assert_eq!(ask(&mut client, &[1, 0, 0, 0, 1])[9..], [0], "OFF once the result is out");
        assert_eq!(exception_code(&ask(&mut client, &trigger)), Some(6), "judging the next part: busy");
        board.update(|s| s.busy = false);
        // OFF does nothing; ON is taken again.
        assert_eq!(ask(&mut client, &[5, 0, 0, 0, 0])[7..], [5, 0, 0, 0, 0]);
        assert!(matches!(input.next(Duration::from_millis(100)).unwrap(), InputEvent::Quiet));
        assert_eq!(ask(&mut client, &trigger)[7..], trigger);
        assert!(matches!(input.next(Duration::from_secs(1)).unwrap(), InputEvent::Change { .. }));
    }

    #[test]
    fn bulk_writes_whose_byte_count_disagrees_are_refused_and_the_client_stays() {
        let (trigger, _input) = RemoteInput::new();
        let (server, _board) = server(Some(trigger), Some(2));
        let mut client = connect(&server);
        for (what, pdu) in [
            ("coils: byte count 5, one byte sent", &[15, 0, 0, 0, 1, 5, 1][..]),
            ("coils: no data", &[15, 0, 0, 0, 1, 0]),
            ("coils: count 0", &[15, 0, 0, 0, 0, 0]),
            ("registers: byte count 4, two sent", &[16, 0, 0, 0, 1, 4, 0, 1]),
            ("registers: byte count 200, none sent", &[16, 0, 0, 0, 1, 200]),
            ("registers: byte count 1 for one register", &[16, 0, 0, 0, 1, 1, 2]),
            ("registers: count 124", &[16, 0, 0, 0, 124, 248]),
        ] {
            assert_eq!(exception_code(&ask(&mut client, pdu)), Some(3), "{what}");
        }
        // Whole ones are carried out: recipe 2 by FC 16.
        assert_eq!(ask(&mut client, &[16, 0, 0, 0, 1, 2, 0, 2])[7..], [16, 0, 0, 0, 1]);
        assert_eq!(exception_code(&ask(&mut client, &[4, 0, 0, 0, 1])), None, "still served");
    }

    #[test]
    fn broken_headers_and_trickling_clients_are_disconnected_and_a_new_client_displaces_the_quietest() {
        let (server, _board) = server(None, None);
        // A protocol ID that is not Modbus: the stream cannot be trusted, it is closed.
        let mut client = connect(&server);
        client.write_all(&[0, 1, 0, 9, 0, 6, 1, 4, 0, 0, 0, 1]).unwrap();
        assert!(closed(&mut client));
        // A length beyond what Modbus allows.
        let mut client = connect(&server);
        client.write_all(&[0, 1, 0, 0, 0x10, 0, 1, 4]).unwrap();
        assert!(closed(&mut client));
        // A client that says nothing is dropped after the idle timeout (300 ms here).
        let mut silent = connect(&server);
        let connected = Instant::now();
        assert!(closed(&mut silent));
        let waited = connected.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(2), "dropped after {waited:?}");
        // One trickling a frame byte by byte is dropped within the frame deadline, however
        // often it sends.
        let mut trickling = connect(&server);
        let began = Instant::now();
        for byte in [0u8, 1, 0, 0, 0, 6, 1, 4, 0, 0, 0] {
            if trickling.write_all(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        assert!(closed(&mut trickling));
        assert!(began.elapsed() < FRAME_DEADLINE + Duration::from_secs(1));
        // One client allowed: a new one displaces the one silent the longest.
        let mut first = connect(&server);
        assert_eq!(exception_code(&ask(&mut first, &[4, 0, 0, 0, 1])), None);
        let mut second = connect(&server);
        assert_eq!(exception_code(&ask(&mut second, &[4, 0, 0, 0, 1])), None);
        assert!(closed(&mut first), "displaced");
    }

    #[test]
    fn a_burst_of_new_connections_never_displaces_a_polling_client() {
        let (server, _board) = server_for(2, None, None);
        let mut plc = connect(&server);
        assert_eq!(exception_code(&ask(&mut plc, &[4, 0, 0, 0, 1])), None);
        // New connections that never complete a request displace each other, oldest first.
        let mut first = connect(&server);
        std::thread::sleep(Duration::from_millis(20));
        let burst: Vec<TcpStream> = (0..5).map(|_| connect(&server)).collect();
        assert!(closed(&mut first), "the idle one connected the longest goes first");
        assert_eq!(exception_code(&ask(&mut plc, &[4, 0, 0, 0, 1])), None, "the PLC stays");
        drop(burst);
    }
}
