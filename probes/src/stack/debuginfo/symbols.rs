//! An object's symbol table, read once into a compact index sorted by address (names stay in the mapping
//! until asked for). Split out of `debuginfo.rs`.

use super::ObjectDebug;
use object::{Object, ObjectSymbol, SymbolKind};

/// One symbol of the symbol table: its address, size and index (the name is read from the mapping on demand).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sym {
    addr: u64,
    size: u32,
    index: u32,
}

impl ObjectDebug {
    /// The text symbols, sorted by address, read on first need.
    fn symbols(&mut self) -> &[Sym] {
        let object = &self.object;
        self.symbols.get_or_insert_with(|| {
            fn collect<'d>(syms: &mut Vec<Sym>, iter: impl Iterator<Item = object::Symbol<'d, 'd>>) {
                for s in iter {
                    if s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0 {
                        syms.push(Sym {
                            addr: s.address(),
                            size: u32::try_from(s.size()).unwrap_or(u32::MAX),
                            index: u32::try_from(s.index().0).unwrap_or(u32::MAX),
                        });
                    }
                }
            }
            let mut syms: Vec<Sym> = Vec::new();
            collect(&mut syms, object.symbols());
            if syms.is_empty() {
                collect(&mut syms, object.dynamic_symbols());
            }
            // Aliases share an address: keep the sized one, then the first.
            syms.sort_by_key(|s| (s.addr, s.size == 0));
            syms.dedup_by_key(|s| s.addr);
            syms.shrink_to_fit();
            syms
        })
    }

    /// The symbol-table name (mangled, as stored) of the function containing `svma`.
    pub(crate) fn symbol_name(&mut self, svma: u64) -> Option<&'static str> {
        let sym = {
            let syms = self.symbols();
            let i = syms.partition_point(|s| s.addr <= svma).checked_sub(1)?;
            let sym = syms[i];
            if sym.size != 0 && svma >= sym.addr + u64::from(sym.size) {
                return None;
            }
            sym
        };
        let symbol = self.object.symbol_by_index(object::SymbolIndex(sym.index as usize)).ok();
        // The dynamic table is used only when the symbol table is empty; try both.
        let symbol = symbol.filter(|s| s.address() == sym.addr).or_else(|| {
            self.object.dynamic_symbol_table().and_then(|t| {
                use object::ObjectSymbolTable;
                t.symbol_by_index(object::SymbolIndex(sym.index as usize)).ok()
            })
        })?;
        symbol.name().ok().filter(|n| !n.is_empty())
    }
}
