//! The boards the firmware example builds for, defined once: the firmware's build script writes the linker's memory
//! map and the stack guard from an entry, and the host builds, runs and compares the firmware on every entry that
//! QEMU emulates.
//!
//! A new board is one entry of [`BOARDS`] (its memory map, Rust target, CPU, QEMU machine and stack guard) and, for a
//! new Rust target, one `[target.*]` section (flip-link as the linker) in `firmware-example/.cargo/config.toml`.

/// How the firmware makes a stack overflow fault instead of running into other memory (flip-link places the stack
/// below static RAM, growing down to the RAM origin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackGuard {
    /// An ARMv7-M MPU region (no access, never executed) over the 1 MiB below the RAM origin.
    Mpu,
    /// The ARMv8-M main stack limit register (`MSPLIM`) set to the RAM origin: a push below it is a fault.
    Msplim,
    /// No mechanism set (no MPU on the nRF51, no stack limit register on ARMv6-M; on RISC-V, physical memory
    /// protection is not used): the addresses below the RAM origin fault on their own (unmapped memory), or an
    /// overflow would go unnoticed.
    None,
}

impl StackGuard {
    /// The name the build script passes to the firmware as `cfg(dualform_guard = "...")`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StackGuard::Mpu => "mpu",
            StackGuard::Msplim => "msplim",
            StackGuard::None => "none",
        }
    }
}

/// One board: a core, its memory and how to run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board {
    /// The name to build with (`DUALFORM_BOARD`); for an emulated board, QEMU's machine name.
    pub name: &'static str,
    /// The processor core, as a person names it.
    pub core: &'static str,
    /// The Rust target.
    pub target: &'static str,
    /// LLVM's CPU for `-C target-cpu` (instruction selection and scheduling for this core).
    pub cpu: &'static str,
    /// Hardware floating point: "single" (FPv4-SP), "double" (FPv5 with double precision), or "none" (the f32
    /// arithmetic is the compiler's software floating point).
    pub fpu: &'static str,
    /// The QEMU program that emulates it (`None`: a real board only, built in CI but never run).
    pub qemu: Option<&'static str>,
    /// Code memory: origin and length in bytes.
    pub flash: (u32, u32),
    /// Data memory the firmware uses: origin and length in bytes (stack and static RAM).
    pub ram: (u32, u32),
    /// How a stack overflow is made to fault.
    pub guard: StackGuard,
}

impl Board {
    /// The board named `name`.
    pub fn named(name: &str) -> Option<&'static Board> {
        BOARDS.iter().find(|b| b.name == name)
    }

    /// The emulated boards, in the order of [`BOARDS`].
    pub fn emulated() -> impl Iterator<Item = &'static Board> {
        BOARDS.iter().filter(|b| b.qemu.is_some())
    }
}

/// The board the firmware builds for by default: the Cortex-M4F under QEMU.
pub const DEFAULT: &str = "mps2-an386";

/// The board of the `board` feature (a real board through probe-rs).
pub const PROBE_DEFAULT: &str = "nucleo-f411re";

const KIB: u32 = 1024;
const MIB: u32 = 1024 * 1024;

/// Every board. RAM is limited to 64 KiB on the emulated boards that have more, so that stack painting is quick and
/// the figures read like a small microcontroller's; the memory maps are QEMU's (`info mtree`), the secure aliases
/// on the ARMv8-M images (which start in the Secure state).
pub const BOARDS: [Board; 8] = [
    Board {
        name: "microbit",
        core: "Cortex-M0",
        target: "thumbv6m-none-eabi",
        cpu: "cortex-m0",
        fpu: "none",
        qemu: Some("qemu-system-arm"),
        flash: (0x0000_0000, 256 * KIB),
        ram: (0x2000_0000, 16 * KIB),
        guard: StackGuard::None,
    },
    Board {
        name: "mps2-an385",
        core: "Cortex-M3",
        target: "thumbv7m-none-eabi",
        cpu: "cortex-m3",
        fpu: "none",
        qemu: Some("qemu-system-arm"),
        flash: (0x0000_0000, 4 * MIB),
        ram: (0x2000_0000, 64 * KIB),
        guard: StackGuard::Mpu,
    },
    Board {
        name: "mps2-an386",
        core: "Cortex-M4F",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m4",
        fpu: "single",
        qemu: Some("qemu-system-arm"),
        flash: (0x0000_0000, 4 * MIB),
        ram: (0x2000_0000, 64 * KIB),
        guard: StackGuard::Mpu,
    },
    Board {
        name: "mps2-an500",
        core: "Cortex-M7",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m7",
        fpu: "double",
        qemu: Some("qemu-system-arm"),
        flash: (0x0000_0000, 4 * MIB),
        ram: (0x2000_0000, 64 * KIB),
        guard: StackGuard::Mpu,
    },
    Board {
        name: "mps2-an505",
        core: "Cortex-M33",
        target: "thumbv8m.main-none-eabihf",
        cpu: "cortex-m33",
        fpu: "single",
        qemu: Some("qemu-system-arm"),
        flash: (0x1000_0000, 4 * MIB),
        ram: (0x3800_0000, 64 * KIB),
        guard: StackGuard::Msplim,
    },
    Board {
        name: "mps3-an547",
        core: "Cortex-M55",
        target: "thumbv8m.main-none-eabihf",
        cpu: "cortex-m55",
        fpu: "double",
        qemu: Some("qemu-system-arm"),
        flash: (0x1000_0000, 512 * KIB),
        ram: (0x3000_0000, 64 * KIB),
        guard: StackGuard::Msplim,
    },
    Board {
        name: "sifive_e",
        core: "SiFive E31",
        target: "riscv32imac-unknown-none-elf",
        cpu: "sifive-e31",
        fpu: "none",
        qemu: Some("qemu-system-riscv32"),
        // The HiFive1's flash (memory-mapped SPI) where QEMU's boot ROM jumps, and its 16 KiB data RAM.
        flash: (0x2040_0000, 4 * MIB),
        ram: (0x8000_0000, 16 * KIB),
        guard: StackGuard::None,
    },
    Board {
        name: "nucleo-f411re",
        core: "Cortex-M4F",
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m4",
        fpu: "single",
        qemu: None,
        flash: (0x0800_0000, 512 * KIB),
        ram: (0x2000_0000, 128 * KIB),
        guard: StackGuard::Mpu,
    },
];
