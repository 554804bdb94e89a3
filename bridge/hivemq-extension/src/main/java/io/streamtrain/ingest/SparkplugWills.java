package io.streamtrain.ingest;

import com.hivemq.extension.sdk.api.events.client.ClientLifecycleEventListener;
import com.hivemq.extension.sdk.api.events.client.parameters.AuthenticationSuccessfulInput;
import com.hivemq.extension.sdk.api.events.client.parameters.ClientInitiatedDisconnectInput;
import com.hivemq.extension.sdk.api.events.client.parameters.ConnectionLostInput;
import com.hivemq.extension.sdk.api.events.client.parameters.ConnectionStartInput;
import com.hivemq.extension.sdk.api.events.client.parameters.DisconnectEventInput;
import com.hivemq.extension.sdk.api.events.client.parameters.ServerInitiatedDisconnectInput;
import com.hivemq.extension.sdk.api.packets.connect.WillPublishPacket;
import com.hivemq.extension.sdk.api.packets.general.DisconnectedReasonCode;

import java.nio.ByteBuffer;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.BiConsumer;

/**
 * Sparkplug B: an edge node's NDEATH is usually its MQTT will, which the broker publishes when the connection
 * ends without a normal DISCONNECT, and HiveMQ calls no publish interceptor for a will. This listener keeps
 * the will of each client whose will is a Sparkplug NDEATH and hands it to the decoder when the broker
 * publishes it: the connection lost, closed by the broker, or a DISCONNECT asking for the will.
 */
final class SparkplugWills implements ClientLifecycleEventListener {
    private record Will(String topic, byte[] payload) {
    }

    private final ConcurrentHashMap<String, Will> wills = new ConcurrentHashMap<>();
    private final IngestMapping mapping;
    private final BiConsumer<String, byte[]> published;

    /** {@code published}: called with the will's topic and payload when the broker publishes it. */
    SparkplugWills(IngestMapping mapping, BiConsumer<String, byte[]> published) {
        this.mapping = mapping;
        this.published = published;
    }

    @Override
    public void onMqttConnectionStart(ConnectionStartInput input) {
        String clientId = input.getClientInformation().getClientId();
        WillPublishPacket will = input.getConnectPacket().getWillPublish().orElse(null);
        if (will != null && mapping.subscribed(will.getTopic())
                && SparkplugDecoder.parseTopic(will.getTopic()) instanceof SparkplugDecoder.Topic t
                && t.messageType().equals("NDEATH")) {
            wills.put(clientId, new Will(will.getTopic(), will.getPayload().map(SparkplugWills::bytes)
                    .orElse(new byte[0])));
        } else {
            wills.remove(clientId);  // a new connection of the client replaces its will
        }
    }

    @Override
    public void onAuthenticationSuccessful(AuthenticationSuccessfulInput input) {
    }

    @Override
    public void onDisconnect(DisconnectEventInput input) {
        wills.remove(input.getClientInformation().getClientId());  // no will published (e.g. authentication failed)
    }

    @Override
    public void onConnectionLost(ConnectionLostInput input) {
        publishedWill(input.getClientInformation().getClientId());
    }

    @Override
    public void onServerInitiatedDisconnect(ServerInitiatedDisconnectInput input) {
        publishedWill(input.getClientInformation().getClientId());
    }

    @Override
    public void onClientInitiatedDisconnect(ClientInitiatedDisconnectInput input) {
        if (input.getReasonCode().orElse(null) == DisconnectedReasonCode.DISCONNECT_WITH_WILL_MESSAGE) {
            publishedWill(input.getClientInformation().getClientId());
        } else {
            wills.remove(input.getClientInformation().getClientId());  // a normal DISCONNECT discards the will
        }
    }

    private void publishedWill(String clientId) {
        Will will = wills.remove(clientId);
        if (will != null) {
            published.accept(will.topic(), will.payload());
        }
    }

    private static byte[] bytes(ByteBuffer buffer) {
        ByteBuffer b = buffer.asReadOnlyBuffer();
        byte[] out = new byte[b.remaining()];
        b.get(out);
        return out;
    }
}
