package org.kommerce.testbed;

import java.lang.instrument.Instrumentation;

/**
 * Stands in for Elasticsearch's entitlement agent, the one jar of the server that is not
 * published to Maven Central. Like the original it holds no logic: the server attaches it to
 * itself at boot and it hands the Instrumentation to the entitlement library, which then
 * installs the real checks.
 */
public final class EntitlementAgent {
    private EntitlementAgent() {}

    public static void agentmain(String args, Instrumentation instrumentation) throws Exception {
        Class.forName("org.elasticsearch.entitlement.initialization.EntitlementInitialization")
            .getMethod("initialize", Instrumentation.class)
            .invoke(null, instrumentation);
    }
}
