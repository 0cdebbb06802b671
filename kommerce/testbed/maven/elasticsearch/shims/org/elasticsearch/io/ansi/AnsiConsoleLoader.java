package org.elasticsearch.io.ansi;

import java.util.function.Supplier;

/**
 * Stands in for the distribution's ANSI console library (not on Maven Central), which the
 * server loads by this name at boot. A test server's output goes to a log file, never a
 * terminal, so "no console" (null) is exactly what the real loader would answer.
 */
public final class AnsiConsoleLoader implements Supplier<Object> {
    @Override
    public Object get() {
        return null;
    }
}
