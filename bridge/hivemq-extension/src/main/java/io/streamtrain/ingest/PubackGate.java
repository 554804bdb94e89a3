package io.streamtrain.ingest;

import com.hivemq.extension.sdk.api.async.Async;
import com.hivemq.extension.sdk.api.interceptor.puback.PubackOutboundInterceptor;
import com.hivemq.extension.sdk.api.interceptor.puback.parameter.PubackOutboundInput;
import com.hivemq.extension.sdk.api.interceptor.puback.parameter.PubackOutboundOutput;
import com.hivemq.extension.sdk.api.services.Services;

import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Holds each PUBACK until Kafka has the record of its PUBLISH (ack.mode=puback, the default).
 *
 * HiveMQ runs a client's interceptor tasks one after the other and keeps an async task at the head
 * of the client's queue until it resumes, so an async publish interceptor lets one message per
 * connection wait for Kafka at a time. Here the publish interceptor hands the record to the producer
 * and returns at once (publishes of a connection are pipelined, in order); the PUBACK that HiveMQ
 * then writes is held in this outbound interceptor until the delivery is confirmed. A delivery that
 * failed disconnects the client before its PUBACK can leave, so the client sends the message again.
 */
final class PubackGate implements PubackOutboundInterceptor {
    private final ConcurrentHashMap<String, CompletableFuture<Void>> pending = new ConcurrentHashMap<>();
    private final Duration holdAtMost;

    PubackGate(int publishTimeoutS) {
        // Kafka's delivery timeout (publish.timeout.s - 5) decides first; this only bounds a lost callback.
        this.holdAtMost = Duration.ofSeconds(publishTimeoutS + 30L);
    }

    static String key(String clientId, int packetId) {
        return clientId + '\u0000' + packetId;
    }

    /** Called by the publish interceptor, before HiveMQ can write the PUBACK. */
    void expect(String clientId, int packetId, CompletableFuture<Void> delivery) {
        pending.put(key(clientId, packetId), delivery);
    }

    @Override
    public void onOutboundPuback(PubackOutboundInput input, PubackOutboundOutput output) {
        String clientId = input.getClientInformation().getClientId();
        CompletableFuture<Void> delivery = pending.remove(key(clientId, input.getPubackPacket().getPacketIdentifier()));
        if (delivery == null) {
            return;  // not a telemetry publish
        }
        if (delivery.isDone() && !delivery.isCompletedExceptionally()) {
            return;
        }
        Async<PubackOutboundOutput> async = output.async(holdAtMost);
        delivery.whenComplete((ok, error) -> {
            if (error == null) {
                async.resume();
                return;
            }
            // Close the connection first: the PUBACK written after resume() finds it closed.
            Services.clientService().disconnectClient(clientId)
                    .whenComplete((done, e) -> async.resume());
        });
    }
}
