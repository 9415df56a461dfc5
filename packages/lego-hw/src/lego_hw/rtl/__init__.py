"""RTL generation: per-mode plans, the Verilog-2005 core emitter and the testbench (LEGO Sec. IV)."""
