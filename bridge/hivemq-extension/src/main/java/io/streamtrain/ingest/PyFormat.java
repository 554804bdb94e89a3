package io.streamtrain.ingest;

import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;

/**
 * Text exactly as CPython writes it, so records and dead-letter details are byte-identical to the
 * Python bridge's: {@code repr(float)}, {@code repr(str)} and {@code json.dumps} strings (ensure_ascii).
 */
final class PyFormat {
    private PyFormat() {
    }

    /** {@code repr(float)}: the shortest digits that read back as {@code d}, in Python's layout. */
    static void appendFloat(StringBuilder out, double d) {
        if (Double.isNaN(d) || Double.isInfinite(d)) {
            throw new IllegalArgumentException("not finite: " + d);  // never written: validation rejects them
        }
        if (d == 0) {
            out.append((Double.doubleToRawLongBits(d) < 0) ? "-0.0" : "0.0");
            return;
        }
        double abs = Math.abs(d);
        Digits shortest = abs >= Double.MIN_NORMAL ? javaDigits(Double.toString(abs)) : null;
        if (shortest == null) {
            shortest = shortest(abs);
        }
        String digits = shortest.digits();
        int exp10 = shortest.exp10();
        if (d < 0) {
            out.append('-');
        }
        if (exp10 < -4 || exp10 >= 16) {
            out.append(digits.charAt(0));
            if (digits.length() > 1) {
                out.append('.').append(digits, 1, digits.length());
            }
            out.append('e').append(exp10 < 0 ? '-' : '+');
            int e = Math.abs(exp10);
            if (e < 10) {
                out.append('0');
            }
            out.append(e);
        } else if (exp10 < 0) {
            out.append("0.");
            for (int i = -1; i > exp10; i--) {
                out.append('0');
            }
            out.append(digits);
        } else if (digits.length() <= exp10 + 1) {
            out.append(digits);
            for (int i = digits.length(); i <= exp10; i++) {
                out.append('0');
            }
            out.append(".0");
        } else {
            out.append(digits, 0, exp10 + 1).append('.').append(digits, exp10 + 1, digits.length());
        }
    }

    /**
     * The fast path of {@link #shortest}, read straight off Java's text without BigDecimal (the extension
     * formats every reading's values; the BigDecimal way cost ~7 % of the broker's CPU at 16 connections):
     * its digits, or null when they may not be the shortest (more than 15 of them). {@code text} is {@code Double.toString} of a positive normal double: "123.45" or "1.2345E-7".
     */
    static Digits javaDigits(String text) {
        int e = text.indexOf('E');
        int exponent = e < 0 ? 0 : Integer.parseInt(text.substring(e + 1));
        String mantissa = e < 0 ? text : text.substring(0, e);
        int point = mantissa.indexOf('.');
        StringBuilder all = new StringBuilder(mantissa.length()).append(mantissa, 0, point).append(mantissa, point + 1,
                mantissa.length());
        int lead = 0;
        while (lead < all.length() - 1 && all.charAt(lead) == '0') {
            lead++;
        }
        int end = all.length();
        while (end > lead + 1 && all.charAt(end - 1) == '0') {
            end--;
        }
        if (end - lead > 15) {
            return null;
        }
        // value = 0.<all> x 10^(point + exponent); each leading zero dropped moves the point one place.
        return new Digits(all.substring(lead, end), point + exponent - lead - 1);
    }

    /** Significant digits without trailing zeros (at least one) and the exponent: value = d.ddd x 10^exp10. */
    record Digits(String digits, int exp10) {
        static Digits of(BigDecimal positive) {
            BigDecimal b = positive.stripTrailingZeros();
            String digits = b.unscaledValue().toString();
            return new Digits(digits, digits.length() - 1 - b.scale());
        }
    }

    /**
     * The shortest decimal that reads back as {@code d} (> 0); of two such, the nearer (as David Gay's dtoa).
     * The path for what {@link #javaDigits} leaves: more than 15 significant digits, or a subnormal.
     */
    private static Digits shortest(double d) {
        return Digits.of(shortestDecimal(d));
    }

    private static BigDecimal shortestDecimal(double d) {
        BigDecimal exact = new BigDecimal(d);
        for (int p = 1; p <= 17; p++) {
            BigDecimal nearest = exact.round(new MathContext(p, RoundingMode.HALF_EVEN));
            if (nearest.doubleValue() == d) {
                return nearest;
            }
            // The nearest p-digit decimal may fall just outside where the neighbour below is closer
            // (powers of two); the other p-digit neighbour may still read back as d.
            BigDecimal down = exact.round(new MathContext(p, RoundingMode.FLOOR));
            BigDecimal up = exact.round(new MathContext(p, RoundingMode.CEILING));
            boolean downOk = down.doubleValue() == d;
            boolean upOk = up.doubleValue() == d;
            if (downOk && upOk) {
                return exact.subtract(down).compareTo(up.subtract(exact)) <= 0 ? down : up;
            }
            if (downOk) {
                return down;
            }
            if (upOk) {
                return up;
            }
        }
        return exact.round(new MathContext(17, RoundingMode.HALF_EVEN));
    }

    /** {@code repr(str)}: quotes, escapes and printable characters as CPython chooses them. */
    static String repr(String s) {
        char quote = (s.indexOf('\'') >= 0 && s.indexOf('"') < 0) ? '"' : '\'';
        StringBuilder out = new StringBuilder(s.length() + 2).append(quote);
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            i += Character.charCount(cp);
            if (cp == quote || cp == '\\') {
                out.append('\\').appendCodePoint(cp);
            } else if (cp == '\t') {
                out.append("\\t");
            } else if (cp == '\n') {
                out.append("\\n");
            } else if (cp == '\r') {
                out.append("\\r");
            } else if (cp < 0x20 || cp == 0x7f) {
                out.append(String.format("\\x%02x", cp));
            } else if (cp < 0x7f || isPrintable(cp)) {
                out.appendCodePoint(cp);
            } else if (cp <= 0xff) {
                out.append(String.format("\\x%02x", cp));
            } else if (cp <= 0xffff) {
                out.append(String.format("\\u%04x", cp));
            } else {
                out.append(String.format("\\U%08x", cp));
            }
        }
        return out.append(quote).toString();
    }

    /** Python's str.isprintable for one code point: not a control, format, surrogate, private, unassigned or separator (but space). */
    private static boolean isPrintable(int cp) {
        if (cp == ' ') {
            return true;
        }
        switch (Character.getType(cp)) {
            case Character.CONTROL, Character.FORMAT, Character.SURROGATE, Character.PRIVATE_USE,
                    Character.UNASSIGNED, Character.LINE_SEPARATOR, Character.PARAGRAPH_SEPARATOR,
                    Character.SPACE_SEPARATOR:
                return false;
            default:
                return true;
        }
    }

    /** A JSON string as {@code json.dumps} writes it (ensure_ascii: everything outside space..~ escaped). */
    static void appendJsonString(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                default -> {
                    if (c < 0x20 || c > 0x7e) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('"');
    }

    /** Python's {@code type(v).__name__} for a decoded JSON value. */
    static String typeName(Object v) {
        if (v == null) {
            return "NoneType";
        }
        if (v instanceof String) {
            return "str";
        }
        if (v instanceof Boolean) {
            return "bool";
        }
        if (v instanceof Double) {
            return "float";
        }
        if (v instanceof Number) {
            return "int";
        }
        if (v instanceof java.util.List) {
            return "list";
        }
        return "dict";
    }
}
