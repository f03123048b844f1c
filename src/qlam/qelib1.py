"""The rest of qelib1.inc in qlam's native gates, as OpenQASM 2 ``gate`` definitions that
:mod:`qlam.openqasm` reads before any file: Qiskit's qelib1.inc definitions, except sx, sxdg
(H S H, H S† H) and ch (RY(-pi/4) CX RY(pi/4)), whose qelib1.inc bodies differ from the gates
by a global phase. Every matrix equals Qiskit's gate class exactly
(tests/circuit/test_qasm_library.py checks each against qiskit.qasm2.LEGACY_CUSTOM_INSTRUCTIONS)."""

LIBRARY = """
gate id a { }
gate u0(gamma) q { }
gate sx a { h a; s a; h a; }
gate sxdg a { h a; sdg a; h a; }
gate cy a,b { sdg b; cx a,b; s b; }
gate ch a,b { ry(pi/4) b; cx a,b; ry(-pi/4) b; }
gate ccx a,b,c { h c; cx b,c; tdg c; cx a,c; t c; cx b,c; tdg c; cx a,c; t b; t c; h c;
  cx a,b; t a; tdg b; cx a,b; }
gate cswap a,b,c { cx c,b; ccx a,b,c; cx c,b; }
gate crx(lambda) a,b { u1(pi/2) b; cx a,b; u3(-lambda/2,0,0) b; cx a,b; u3(lambda/2,-pi/2,0) b; }
gate cry(lambda) a,b { ry(lambda/2) b; cx a,b; ry(-lambda/2) b; cx a,b; }
gate crz(lambda) a,b { rz(lambda/2) b; cx a,b; rz(-lambda/2) b; cx a,b; }
gate cu1(lambda) a,b { u1(lambda/2) a; cx a,b; u1(-lambda/2) b; cx a,b; u1(lambda/2) b; }
gate cp(lambda) a,b { u1(lambda/2) a; cx a,b; u1(-lambda/2) b; cx a,b; u1(lambda/2) b; }
gate cu3(theta,phi,lambda) c,t { u1((lambda+phi)/2) c; u1((lambda-phi)/2) t; cx c,t;
  u3(-theta/2,0,-(phi+lambda)/2) t; cx c,t; u3(theta/2,phi,0) t; }
gate csx a,b { h b; cu1(pi/2) a,b; h b; }
gate cu(theta,phi,lambda,gamma) c,t { u1(gamma) c; u1((lambda+phi)/2) c; u1((lambda-phi)/2) t;
  cx c,t; u3(-theta/2,0,-(phi+lambda)/2) t; cx c,t; u3(theta/2,phi,0) t; }
gate rccx a,b,c { u2(0,pi) c; u1(pi/4) c; cx b,c; u1(-pi/4) c; cx a,c; u1(pi/4) c; cx b,c;
  u1(-pi/4) c; u2(0,pi) c; }
gate rc3x a,b,c,d { u2(0,pi) d; u1(pi/4) d; cx c,d; u1(-pi/4) d; u2(0,pi) d; cx a,d;
  u1(pi/4) d; cx b,d; u1(-pi/4) d; cx a,d; u1(pi/4) d; cx b,d; u1(-pi/4) d; u2(0,pi) d;
  u1(pi/4) d; cx c,d; u1(-pi/4) d; u2(0,pi) d; }
gate c3x a,b,c,d { h d; u1(pi/8) a; u1(pi/8) b; u1(pi/8) c; u1(pi/8) d; cx a,b; u1(-pi/8) b;
  cx a,b; cx b,c; u1(-pi/8) c; cx a,c; u1(pi/8) c; cx b,c; u1(-pi/8) c; cx a,c; cx c,d;
  u1(-pi/8) d; cx b,d; u1(pi/8) d; cx c,d; u1(-pi/8) d; cx a,d; u1(pi/8) d; cx c,d;
  u1(-pi/8) d; cx b,d; u1(pi/8) d; cx c,d; u1(-pi/8) d; cx a,d; h d; }
gate c3sqrtx a,b,c,d { h d; cu1(pi/8) a,d; h d; cx a,b; h d; cu1(-pi/8) b,d; h d; cx a,b;
  h d; cu1(pi/8) b,d; h d; cx b,c; h d; cu1(-pi/8) c,d; h d; cx a,c; h d; cu1(pi/8) c,d;
  h d; cx b,c; h d; cu1(-pi/8) c,d; h d; cx a,c; h d; cu1(pi/8) c,d; h d; }
gate c4x a,b,c,d,e { h e; cu1(pi/2) d,e; h e; c3x a,b,c,d; h e; cu1(-pi/2) d,e; h e;
  c3x a,b,c,d; c3sqrtx a,b,c,e; }
"""
