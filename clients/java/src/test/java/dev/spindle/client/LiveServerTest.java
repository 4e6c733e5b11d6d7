package dev.spindle.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.spindle.v1.AddRequestResponse;
import dev.spindle.v1.FinishReason;
import dev.spindle.v1.GetModelInfoResponse;
import dev.spindle.v1.ServerMode;
import dev.spindle.v1.GenerateResponse;
import dev.spindle.v1.GenerationConfig;
import dev.spindle.v1.MetricsResponse;
import io.grpc.Status;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Tests against live servers started by tests/polyglot (one threaded, one stepped), which passes their
 * addresses and the Python SyncClient's greedy result for the same input through the environment.
 */
class LiveServerTest {
  private static SpindleClient threaded;
  private static SpindleClient stepped;
  private static String prompt;
  private static int maxTokens;
  private static List<Integer> expectedIds;
  private static String expectedText;
  private static String expectedFinish;

  private static String env(String name) {
    String v = System.getenv(name);
    if (v == null || v.isEmpty()) {
      fail(name + " is not set: run these tests through tests/polyglot (make test-polyglot)");
    }
    return v;
  }

  @BeforeAll
  static void connect() {
    threaded = new SpindleClient(env("SPINDLE_TEST_TARGET"));
    stepped = new SpindleClient(env("SPINDLE_TEST_STEPPED_TARGET"));
    JsonObject e = JsonParser.parseString(env("SPINDLE_TEST_EXPECTED")).getAsJsonObject();
    prompt = e.get("prompt").getAsString();
    maxTokens = e.get("max_tokens").getAsInt();
    expectedIds = new ArrayList<>();
    e.getAsJsonArray("token_ids").forEach(x -> expectedIds.add(x.getAsInt()));
    expectedText = e.get("text").getAsString();
    expectedFinish = e.get("finish_reason").getAsString();
  }

  @AfterAll
  static void close() throws InterruptedException {
    threaded.close();
    stepped.close();
  }

  @Test
  void greedyGenerateEqualsPythonClient() {
    GenerationResult r = threaded.generate(prompt, SpindleClient.greedy(maxTokens));
    assertEquals(expectedIds, r.tokenIds());
    assertEquals(expectedText, r.text());
    assertEquals(expectedFinish, r.finishReason().name());
    assertEquals(expectedIds.size(), r.usage().getCompletionTokens());
    assertEquals(0f, r.finalOutput().getEffectiveConfig().getTemperature());
  }

  @Test
  void cancelEndsStreamAndServerCountsAbort() throws InterruptedException {
    MetricsResponse before = threaded.metrics();
    GenerationConfig cfg = SpindleClient.greedy(400).toBuilder().setIgnoreEos(true).build();
    GenerationStream stream = threaded.stream(SpindleClient.text("A long story:"), cfg, "java-cancel");
    assertTrue(stream.hasNext());
    assertFalse(stream.next().hasFinal());
    stream.cancel();
    SpindleException e = assertThrows(SpindleException.class, () -> {
      for (int i = 0; i < 1000 && stream.hasNext(); i++) {
        GenerateResponse msg = stream.next();
        assertFalse(msg.hasFinal(), "the stream finished normally despite the cancel");
      }
    });
    assertEquals(Status.Code.CANCELLED, e.code());
    long deadline = System.currentTimeMillis() + 10_000;
    while (true) {
      MetricsResponse m = threaded.metrics();
      if (m.getAbortedRequests() > before.getAbortedRequests() && m.getLiveRequests() == 0
          && m.getRunningRequests() == 0) {
        assertEquals(0, m.getKvPagesUsed());
        return;
      }
      assertTrue(System.currentTimeMillis() < deadline, "metrics never showed the abort: " + m);
      Thread.sleep(20);
    }
  }

  @Test
  void invalidArgumentNamesTheField() {
    GenerationConfig bad = SpindleClient.greedy(4).toBuilder().setTemperature(-1f).build();
    SpindleException e = assertThrows(SpindleException.class, () -> threaded.generate("hello", bad));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.code());
    assertEquals("config.temperature", e.field("temperature").orElseThrow().field());
  }

  @Test
  void steppedModeAddRequestAndStep() {
    stepped.reset();
    AddRequestResponse added = stepped.addRequest(SpindleClient.text(prompt), SpindleClient.greedy(maxTokens),
        "java-stepped");
    assertEquals("java-stepped", added.getRequestId());
    assertFalse(added.getPromptTokenIdsList().isEmpty());
    SpindleException dup = assertThrows(SpindleException.class,
        () -> stepped.addRequest(SpindleClient.text(prompt), SpindleClient.greedy(maxTokens), "java-stepped"));
    assertEquals(Status.Code.ALREADY_EXISTS, dup.code());
    GenerationResult r = stepped.stepUntilDone("java-stepped", 10 * maxTokens + 10);
    assertEquals(expectedIds, r.tokenIds());
    assertEquals(expectedText, r.text());
    assertTrue(stepped.step().getEngineEmpty());
    SpindleException wrongMode = assertThrows(SpindleException.class, () -> threaded.step());
    assertEquals(Status.Code.FAILED_PRECONDITION, wrongMode.code());
    assertNotNull(wrongMode.reason());
  }

  @Test
  void tokenIdsChatTokenizeModelInfoAndFollow() {
    GetModelInfoResponse info = threaded.modelInfo();
    assertEquals(ServerMode.SERVER_MODE_THREADED, info.getMode());
    assertTrue(info.getHasChatTemplate());
    List<Integer> ids = threaded.tokenize(prompt);
    assertFalse(ids.isEmpty());
    GenerationResult fromIds = threaded.generate(
        SpindleClient.tokens(ids.stream().mapToInt(Integer::intValue).toArray()), SpindleClient.greedy(maxTokens));
    assertEquals(expectedIds, fromIds.tokenIds());
    assertEquals(expectedText, threaded.detokenize(fromIds.tokenIds(), false));
    GenerationResult chat = threaded.generate(SpindleClient.chat(SpindleClient.message("user", "Hello there")),
        SpindleClient.greedy(4));
    assertFalse(chat.tokenIds().isEmpty());
    assertTrue(chat.usage().getPromptTokens() > 2);
    GenerationConfig cfg = SpindleClient.greedy(24).toBuilder().setIgnoreEos(true).build();
    AddRequestResponse added = threaded.addRequest(SpindleClient.text(prompt), cfg, "java-follow");
    try {
      GenerationResult followed = threaded.follow(added.getRequestId());
      assertEquals(FinishReason.FINISH_REASON_LENGTH, followed.finishReason());
      assertEquals(24, followed.usage().getCompletionTokens());
    } catch (SpindleException e) {
      // it may finish before FollowRequest reaches the server
      assertEquals(Status.Code.NOT_FOUND, e.code(), e.getMessage());
    }
  }
}
